"""Task 4: Eq. (4), straight_through_gradient in tqref/ternary/quantize.py and
the ternary layer's hooks weight_for_forward and accept_weight_gradient in
tqref/ternary/layers.py.

The quantizer the layer calls (the backend's ternarize_expansions, task 5's
effective_weight) is replaced here by a stand-in, so this task is graded
on its own: every expansion codes sign(W), with α_k = (k + 1)/4, so
W_eff = (Σ_k α_k)·sign(W).
"""

import numpy as np
import pytest

import tqref
from tqref import ternary
from tqref.course import checks
from tqref.nn import Linear
from tqref.ternary import layers
from tqref.ternary.quantize import Ternarized, straight_through_gradient

pytestmark = pytest.mark.task4
NAME = "straight_through_gradient"


def _around_the_clip(rng, shape, clip, dtype=np.float64):
    """Latent weights inside (|W| < clip), outside, and exactly at ±clip (outside)."""
    kind = rng.integers(0, 3, shape)  # 0 inside, 1 outside, 2 exactly at the clip
    mags = np.where(kind == 0, rng.uniform(0, 0.999, shape) * clip, rng.uniform(1.001, 3, shape) * clip)
    mags = np.where(kind == 2, clip, mags)
    w = (np.where(rng.uniform(size=shape) < 0.5, -1, 1) * mags).astype(dtype)
    return w, kind == 0


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_the_gradient_passes_straight_through_inside_the_clip(rng, dtype):
    for t_ex in (1, 2, 4):
        clip = float(dtype(rng.uniform(0.3, 2.0)))
        shape = checks.random_weight_shape(rng)
        w, inside = _around_the_clip(rng, shape, clip, dtype)
        g = rng.standard_normal(shape).astype(dtype)
        w0, g0 = w.copy(), g.copy()
        expected = np.where(inside, t_ex * g.astype(np.float64), 0.0)
        got = straight_through_gradient(g, w, t_ex, clip)
        checks.check_array(f"{NAME}(dW_eff {shape} {np.dtype(dtype)}, W, t_ex={t_ex}, clip={clip:.4g})",
                           got, expected.astype(dtype), 1e-7 if dtype == np.float32 else 1e-15)
        checks.check_unchanged(f"{NAME}: grad_effective", g0, g)
        checks.check_unchanged(f"{NAME}: latent_weight", w0, w)


def test_the_default_clip_is_one(rng):
    shape = checks.random_weight_shape(rng)
    w, inside = _around_the_clip(rng, shape, 1.0)
    g = rng.standard_normal(shape)
    checks.check_array(f"{NAME}(dW_eff {shape}, W) (the paper's clip |W| < 1)", straight_through_gradient(g, w),
                       np.where(inside, g, 0.0), 1e-15)


def test_zero_weights_receive_the_gradient(rng):
    """A latent weight coded 0 (|W| < Δ) still learns: that is the point of the estimator."""
    shape = checks.random_weight_shape(rng)
    w = np.zeros(shape)
    g = rng.standard_normal(shape)
    checks.check_array(f"{NAME}(dW_eff {shape}, all-zero W)", straight_through_gradient(g, w), g, 1e-15)


# ---------------------------------------------------------------- the layer's hooks
def stand_in_expansions(latent_weight, delta_factors=(0.05,), threshold_rule="max", per_channel=False):
    """Not the paper's quantizer: expansion k codes sign(W) with α_k = (k + 1)/4."""
    codes = np.sign(latent_weight).astype(np.int8)
    return [Ternarized(codes, 0.25 * (k + 1), float(d)) for k, d in enumerate(delta_factors)]


def stand_in_effective_weight(expansions, dtype=np.float32):
    total_alpha = sum(q.alpha for q in expansions)
    return (total_alpha * expansions[0].codes).astype(dtype)


@pytest.fixture
def stand_ins(monkeypatch):
    monkeypatch.setattr(layers, "effective_weight", stand_in_effective_weight)
    with tqref.use_backend("reference", ternarize_expansions=stand_in_expansions) as backend:
        yield backend


def _layer(rng, t_ex, clip=1.0):
    D, F = int(rng.integers(3, 12)), int(rng.integers(2, 7))
    plain = Linear(D, F, dtype=np.float64, rng=int(rng.integers(1 << 30)))
    plain.params["bias"][...] = rng.standard_normal(F)
    return ternary.TernaryLinear.from_float(plain, t_ex=t_ex, clip=clip)


def test_weight_for_forward_is_w_eff_not_the_latent_weight(rng, stand_ins):
    for t_ex in (1, 2):
        layer = _layer(rng, t_ex)
        w = layer.params["weight"]
        expected = 0.25 * t_ex * (t_ex + 1) / 2 * np.sign(w)
        got = layer.weight_for_forward()
        checks.check_array(f"TernaryLinear(t_ex={t_ex}).weight_for_forward() (W_eff, from the backend's "
                           f"ternarize_expansions and effective_weight)", got, expected, 1e-15)
        x = rng.standard_normal((3, w.shape[1]))
        out = layer.forward(x)
        checks.check_array(f"TernaryLinear(t_ex={t_ex}).forward(x {x.shape}) (x · W_effᵀ + b)", out,
                           x @ expected.T + layer.params["bias"], 1e-12)


def test_accept_weight_gradient_applies_eq4_in_place(rng, stand_ins):
    for t_ex in (1, 2, 4):
        clip = float(rng.uniform(0.3, 2.0))
        layer = _layer(rng, t_ex, clip)
        w, inside = _around_the_clip(rng, layer.params["weight"].shape, clip)
        layer.params["weight"][...] = w
        grads = layer.grads["weight"]
        dw = rng.standard_normal(w.shape)
        layer.accept_weight_gradient(dw)
        what = f"TernaryLinear(t_ex={t_ex}, clip={clip:.4g}).accept_weight_gradient(dw {dw.shape})"
        if layer.grads["weight"] is not grads:
            checks.fail(f"{what}: replaced the array self.grads['weight']; write into it in place "
                        f"(self.grads['weight'][...] = ...): the optimiser holds that array")
        checks.check_array(f"{what}: grads['weight'] (Eq. 4: t_ex · dW_eff · 1[|W| < clip])", grads,
                           np.where(inside, t_ex * dw, 0.0), 1e-15)


def test_backward_through_the_layer(rng, stand_ins):
    """forward then backward: dx uses W_eff; the latent weight's gradient is Eq. (4) of doutᵀ·x."""
    layer = _layer(rng, 2)
    w = layer.params["weight"]
    x = rng.standard_normal((4, w.shape[1]))
    out = layer.forward(x)
    dout = rng.standard_normal(out.shape)
    dx = layer.backward(dout)
    w_eff = 0.75 * np.sign(w)
    checks.check_array("TernaryLinear(t_ex=2): backward: dx (dout · W_eff)", dx, dout @ w_eff, 1e-12)
    checks.check_array("TernaryLinear(t_ex=2): backward: grads['weight'] (Eq. 4 of doutᵀ · x)",
                       layer.grads["weight"], np.where(np.abs(w) < 1.0, 2 * dout.T @ x, 0.0), 1e-12)
    checks.check_array("TernaryLinear(t_ex=2): backward: grads['bias']", layer.grads["bias"], dout.sum(axis=0),
                       1e-12)
