"""Task 2: batch norm backward, batchnorm_backward in tqref/functional/batchnorm.py.

The cache comes from the library's batchnorm_forward; the gradients are
checked against numeric gradients of that forward (float64), against what
the gradient must satisfy (in training mode Σ dx = 0 and Σ dx·x̂ = 0 per
channel, the terms through μ and σ²), against the evaluation-mode formula,
and in float32.
"""

import numpy as np
import pytest

from tqref.course import checks
from tqref.functional.batchnorm import batchnorm_backward, batchnorm_forward

pytestmark = pytest.mark.task2
NAME = "batchnorm_backward"


def _shape(rng):
    while True:
        shape = (int(rng.integers(1, 5)), int(rng.integers(1, 5)), int(rng.integers(1, 5)), int(rng.integers(1, 5)))
        if shape[0] * shape[2] * shape[3] >= 2:
            return shape


def _run(rng, shape, training, dtype=np.float64, eps=1e-5):
    x, gamma, beta, rm, rv = checks.bn_inputs(rng, shape, dtype)
    out, cache = batchnorm_forward(x, gamma, beta, rm.copy(), rv.copy(), training, 0.1, eps)
    dout = rng.standard_normal(shape).astype(dtype)
    dout0 = dout.copy()
    what = f"{NAME} ({'training' if training else 'evaluation'} mode, x {shape} {np.dtype(dtype)})"
    result = checks.check_tuple(what, batchnorm_backward(dout, cache), 3, ("dx", "dgamma", "dbeta"))
    checks.check_unchanged(f"{NAME}: dout", dout0, dout)
    return what, (x, gamma, beta, rm, rv, dout, cache), result


@pytest.mark.parametrize("training", [True, False], ids=["training", "evaluation"])
def test_gradients_match_numeric_gradients(rng, training):
    for _ in range(3):
        what, (x, gamma, beta, rm, rv, dout, cache), grads = _run(rng, _shape(rng), training)
        numeric = checks.bn_numeric_gradients(batchnorm_forward, x, gamma, beta, rm, rv, training, 1e-5, dout)
        _check_gradients(what, grads, numeric, dout, cache)


def _check_gradients(what, grads, numeric, dout, cache, names=("dx", "dgamma", "dbeta")):
    """Each against its numeric gradient, to a scale of at least what one entry of dout
    carries (γ/σ̃·|dout| for dx, |dout| for dγ, dβ): with m = 2 values per channel, dx is
    nearly 0 and the numeric gradient's rounding would dominate."""
    __tracebackhide__ = True
    peak = float(np.max(np.abs(dout)))
    floors = {"dx": peak * float(np.max(np.abs(cache["gamma"] * cache["inv_std"]))), "dgamma": peak, "dbeta": peak}
    for name, got, expected in zip(names, grads, numeric):
        checks.check_array(f"{what}: {name} (against the numeric gradient)", got, expected, 1e-6, floor=floors[name])


def test_training_gradient_has_the_terms_through_mean_and_variance(rng):
    """With ε ≈ 0, x̂ has mean 0 and mean square 1 per channel whatever x is: moving x along
    1 or along x̂ changes no output, so dx is orthogonal to both (Σ dx = 0 is the term
    through μ, Σ dx·x̂ = 0 the term through σ²)."""
    for _ in range(3):
        what, (*_, dout, cache), (dx, _, _) = _run(rng, _shape(rng), True, eps=1e-12)
        xhat = cache["xhat"]
        # what one entry of dout carries into dx (γ/σ̃·|dout|), times the m terms of a sum
        scale = float(np.max(np.abs(dout)) * np.max(np.abs(cache["gamma"] * cache["inv_std"]))) * dx[:, 0].size
        for c in range(dx.shape[1]):
            s, sx = float(dx[:, c].sum()), float((dx[:, c] * xhat[:, c]).sum())
            if abs(s) > 1e-9 * scale:
                checks.fail(f"{what}: Σ dx over channel {c} = {s:.3g}, expected 0 (the gradient through μ "
                            f"is missing or wrong)")
            if abs(sx) > 1e-8 * scale:
                checks.fail(f"{what}: Σ dx·x̂ over channel {c} = {sx:.3g}, expected 0 (the gradient through σ² "
                            f"is missing or wrong)")


def test_evaluation_mode_is_a_per_channel_scale(rng):
    """In evaluation mode μ and σ² are the running statistics, constants: dx = γ·dy/√(running_var + ε)."""
    what, (x, gamma, beta, rm, rv, dout, _), (dx, _, _) = _run(rng, _shape(rng), False, eps=1e-3)
    expected = dout * (gamma / np.sqrt(rv + 1e-3))[None, :, None, None]
    checks.check_array(f"{what}: dx", dx, expected, 1e-12)


def test_float32_gives_float32_close_to_float64(rng):
    shape = (int(rng.integers(4, 9)), int(rng.integers(2, 6)), 6, 6)
    for training in (True, False):
        seed = int(rng.integers(1 << 30))
        what, _, got = _run(np.random.default_rng(seed), shape, training, np.float32)
        _, _, exact = _run(np.random.default_rng(seed), shape, training, np.float64)
        for name, g, e in zip(("dx", "dgamma", "dbeta"), got, exact):
            checks.check_array(f"{what}: {name} (against the float64 result)", g, e.astype(np.float32), 1e-4)


def test_batch_of_one_pixel_per_image(rng):
    """H = W = 1 (as after global pooling): the statistics run over the batch only."""
    shape = (int(rng.integers(2, 7)), int(rng.integers(1, 5)), 1, 1)
    what, (x, gamma, beta, rm, rv, dout, cache), grads = _run(rng, shape, True)
    numeric = checks.bn_numeric_gradients(batchnorm_forward, x, gamma, beta, rm, rv, True, 1e-5, dout)
    _check_gradients(what, grads, numeric, dout, cache)
