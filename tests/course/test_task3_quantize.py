"""Task 3: Eqs. (1)-(3), threshold, alpha and ternary_codes in
tqref/ternary/quantize.py.

The weights are built so that Δ, α and T are known by construction
(``tqref.course.checks.planted_weights``): every weight is drawn inside a
band between two thresholds, the largest magnitude is planted.  Edge cases:
weights exactly at ±Δ (they go to ±1), all-zero weights (Δ = α = 0, T = 0),
per-channel thresholds, float32.
"""

import numpy as np
import pytest

from tqref.course import checks
from tqref.ternary.quantize import alpha, ternarize, ternary_codes, threshold

pytestmark = pytest.mark.task3


def _factor(rng):
    return float(rng.choice([0.05, round(float(rng.uniform(0.02, 0.6)), 4)]))


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_threshold_is_delta_times_the_largest_magnitude(rng, dtype):
    for _ in range(4):
        shape, d = checks.random_weight_shape(rng), _factor(rng)
        p = checks.planted_weights(rng, shape, (d,), dtype)
        checks.check_number(f"threshold(W {shape} {np.dtype(dtype)}, delta_factor={d})", threshold(p.w, d),
                            p.thresholds[0], 1e-12 if dtype == np.float64 else 1e-6)


def test_threshold_default_is_the_papers_delta(rng):
    p = checks.planted_weights(rng, checks.random_weight_shape(rng), (0.05,))
    checks.check_number(f"threshold(W {p.w.shape}) with the default delta_factor (0.05)", threshold(p.w),
                        p.thresholds[0], 1e-12)


def test_threshold_per_channel(rng):
    shape, d = checks.random_weight_shape(rng), _factor(rng)
    p = checks.planted_weights(rng, shape, (d,), per_channel=True)
    what = f"threshold(W {shape}, delta_factor={d}, per_channel=True)"
    checks.check_array(what, np.asarray(threshold(p.w, d, per_channel=True)), p.thresholds[0], 1e-12)


def test_threshold_twn_rule(rng):
    """TWN's rule (for comparison): Δ = δ·mean|W|."""
    shape = checks.random_weight_shape(rng)
    w = rng.standard_normal(shape)
    checks.check_number(f"threshold(W {shape}, 0.7, threshold_rule='twn')", threshold(w, 0.7, "twn"),
                        0.7 * float(np.mean(np.abs(w))), 1e-12)
    what = f"threshold(W {shape}, 0.7, threshold_rule='twn', per_channel=True)"
    checks.check_array(what, np.asarray(threshold(w, 0.7, "twn", per_channel=True)),
                       0.7 * np.abs(w).reshape(shape[0], -1).mean(axis=1), 1e-12)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_codes_of_planted_weights(rng, dtype):
    for _ in range(4):
        shape, d = checks.random_weight_shape(rng), _factor(rng)
        p = checks.planted_weights(rng, shape, (d,), dtype)
        checks.check_array(f"ternary_codes(W {shape} {np.dtype(dtype)}, threshold={p.thresholds[0]:.6g})",
                           ternary_codes(p.w, p.thresholds[0]), p.codes[0], dtype=np.int8)


def test_codes_ties_at_plus_minus_delta_go_to_plus_minus_one(rng):
    shape = checks.random_weight_shape(rng)
    p = checks.planted_weights(rng, shape, (0.05, 0.3), ties=True)  # weights exactly at ±Δ_1 and ±Δ_2
    for k in range(2):
        ties = np.argwhere(np.abs(p.w) == p.thresholds[k])
        assert len(ties), "the test's planted ties are missing"
        got = ternary_codes(p.w, p.thresholds[k])
        checks.check_array(f"ternary_codes(W {shape} with weights exactly at ±Δ = ±{p.thresholds[k]:.6g})",
                           got, p.codes[k], dtype=np.int8)


def test_codes_per_channel_thresholds(rng):
    shape = checks.random_weight_shape(rng)
    p = checks.planted_weights(rng, shape, (_factor(rng),), per_channel=True)
    checks.check_array(f"ternary_codes(W {shape}, threshold of shape {p.thresholds[0].shape}) "
                       f"(one Δ per output channel, along axis 0)",
                       ternary_codes(p.w, p.thresholds[0]), p.codes[0], dtype=np.int8)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_alpha_is_the_mean_magnitude_above_the_threshold(rng, dtype):
    for _ in range(4):
        shape, d = checks.random_weight_shape(rng), _factor(rng)
        p = checks.planted_weights(rng, shape, (d,), dtype)
        n = int(np.count_nonzero(p.codes[0]))
        checks.check_number(f"alpha(W {shape} {np.dtype(dtype)}, threshold={p.thresholds[0]:.6g}) "
                            f"(the mean of the {n} magnitudes ≥ Δ)", alpha(p.w, p.thresholds[0]),
                            p.alphas[0], 1e-12 if dtype == np.float64 else 1e-6)


def test_alpha_with_ties_counts_the_weights_at_delta(rng):
    p = checks.planted_weights(rng, checks.random_weight_shape(rng), (0.05, 0.3), ties=True)
    for k in range(2):
        checks.check_number(f"alpha(W {p.w.shape} with weights exactly at ±Δ = ±{p.thresholds[k]:.6g})",
                            alpha(p.w, p.thresholds[k]), p.alphas[k], 1e-12)


def test_alpha_per_channel(rng):
    shape = checks.random_weight_shape(rng)
    p = checks.planted_weights(rng, shape, (_factor(rng),), per_channel=True, zero_channels=1)
    checks.check_array(f"alpha(W {shape}, threshold of shape {p.thresholds[0].shape}, per_channel=True) "
                       f"(row {int(np.flatnonzero(p.thresholds[0] == 0)[0])} is all zero: α = 0 there)",
                       np.asarray(alpha(p.w, p.thresholds[0], per_channel=True)), p.alphas[0], 1e-12)


def test_alpha_is_the_least_squares_scale(rng):
    """For the codes T fixed, α minimises ||W − α·T||²: any other scale does worse."""
    p = checks.planted_weights(rng, checks.random_weight_shape(rng), (_factor(rng),))
    a = float(alpha(p.w, p.thresholds[0]))
    t = p.codes[0].astype(np.float64)
    best = float(np.sum((p.w - a * t) ** 2))
    for other in (a * (1 - 1e-3), a * (1 + 1e-3)):
        if float(np.sum((p.w - other * t) ** 2)) < best:
            checks.fail(f"alpha(W {p.w.shape}): the scale {other:.6g} fits W better than α = {a:.6g}; "
                        f"α must minimise ||W − α·T||² for the codes T")


@pytest.mark.parametrize("shape", [(4, 3, 3, 3), (5, 7)], ids=["conv", "linear"])
def test_all_zero_weights(shape):
    """max|W| = 0: Δ = 0, and then T = 0 and α = 0 (not NaN, and not T = +1 from 0 ≥ 0)."""
    w = np.zeros(shape)
    checks.check_number(f"threshold(all-zero W {shape})", threshold(w), 0.0)
    checks.check_array(f"ternary_codes(all-zero W {shape}, threshold=0)", ternary_codes(w, 0.0),
                       np.zeros(shape, np.int8))
    got = alpha(w, 0.0)
    if isinstance(got, (float, np.floating)) and np.isnan(got):
        checks.fail(f"alpha(all-zero W {shape}, threshold=0): got NaN (0/0); expected 0")
    checks.check_number(f"alpha(all-zero W {shape}, threshold=0)", got, 0.0)
    checks.check_array(f"threshold(all-zero W {shape}, per_channel=True)",
                       np.asarray(threshold(w, per_channel=True)), np.zeros(shape[0]))


def test_ternarize_puts_the_three_together(rng):
    """ternarize (given) calls your three functions: W' = α·T."""
    shape = checks.random_weight_shape(rng)
    p = checks.planted_weights(rng, shape, (0.05,), np.float32)
    q = ternarize(p.w)
    expected = (np.float32(p.alphas[0]) * p.codes[0].astype(np.float32))
    checks.check_array(f"ternarize(W {shape} float32).weight() (α·T)", q.weight(), expected, 1e-6)
