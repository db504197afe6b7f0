"""Property tests (hypothesis): laws that hold for any input, on inputs
hypothesis draws and shrinks to a smallest failing example.  Optional:
without hypothesis installed (pip install -e ".[course]") they skip, and
the grade counts the other tests of each task.
"""

import os
import tempfile

import numpy as np
import pytest

from tqref.course import checks
from tqref.functional.batchnorm import batchnorm_backward, batchnorm_forward
from tqref.functional.conv import conv2d_backward, conv2d_backward_naive, conv2d_forward, conv2d_forward_naive
from tqref.ternary.quantize import (
    Ternarized,
    alpha,
    effective_weight,
    straight_through_gradient,
    ternary_codes,
    threshold,
)

# hypothesis keeps caches (and, after a failure, patches) in a folder; not in the working
# folder here, but in the system's temporary one, unless the environment says otherwise
os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY", os.path.join(tempfile.gettempdir(), "tqref-course-hypothesis"))
hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

# the run's hidden seed decides hypothesis's draws too; no example database on disk; no
# shrinking (the messages name the inputs, and a stub would be shrunk for seconds)
PROPERTY = settings(max_examples=25, deadline=None, database=None, derandomize=False,
                    phases=(hypothesis.Phase.explicit, hypothesis.Phase.generate),
                    suppress_health_check=list(hypothesis.HealthCheck))
SEEDED = hypothesis.seed(checks.grade_seed())


@st.composite
def conv_problems(draw, max_size=6):
    N, C, F = draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    H, W = draw(st.integers(1, max_size)), draw(st.integers(1, max_size))
    padding, stride = draw(st.integers(0, 2)), draw(st.integers(1, 3))
    HH = draw(st.integers(1, H + 2 * padding))
    WW = draw(st.integers(1, W + 2 * padding))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return checks.conv_case(rng, N, C, H, W, F, HH, WW, stride, padding, draw(st.booleans()))


def _adjoint(names, forward, backward, case):
    """The convolution without its bias is linear in x and in w, and the backward pass
    applies its transpose: ⟨out − b, dout⟩ = ⟨x, dx⟩ = ⟨w, dw⟩."""
    out, cache = forward(case.x, case.w, case.b, case.stride, case.padding)
    dx, dw, db = backward(case.dout, cache)
    bias_part = 0.0 if case.b is None else float(np.sum(case.b * np.sum(case.dout, axis=(0, 2, 3))))
    total = float(np.sum(out * case.dout)) - bias_part
    for name, grad, arg in (("dx", dx, case.x), ("dw", dw, case.w)):
        inner = float(np.sum(np.asarray(grad) * arg))
        if abs(inner - total) > 1e-9 * (1 + abs(total)) * np.sqrt(case.dout.size * case.w[0].size):
            checks.fail(f"{names[1]} ({case.describe()}): ⟨{name}, {name[1:]}⟩ = {inner:.8g} but ⟨out − b, dout⟩ = "
                        f"{total:.8g}; the backward pass must apply the transpose of the forward")


@pytest.mark.task1a
@PROPERTY
@SEEDED
@given(conv_problems())
def test_loops_backward_is_the_adjoint(case):
    _adjoint(("conv2d_forward_naive", "conv2d_backward_naive"), conv2d_forward_naive, conv2d_backward_naive, case)


@pytest.mark.task1b
@PROPERTY
@SEEDED
@given(conv_problems(max_size=9))
def test_vectorised_backward_is_the_adjoint(case):
    _adjoint(("conv2d_forward", "conv2d_backward"), conv2d_forward, conv2d_backward, case)


@pytest.mark.task1b
@PROPERTY
@SEEDED
@given(conv_problems(max_size=9))
def test_vectorised_forward_is_the_fft_convolution(case):
    checks.check_conv_forward("conv2d_forward", conv2d_forward, case)


@pytest.mark.task2
@PROPERTY
@SEEDED
@given(st.integers(0, 2**32 - 1), st.floats(0.01, 100.0), st.floats(-100.0, 100.0))
def test_batchnorm_backward_is_blind_to_shift_and_scale(seed, scale, shift):
    """BN(a·x + c) = BN(x) in training mode (ε aside), so dx at a·x + c is dx at x divided by a."""
    rng = np.random.default_rng(seed)
    x, gamma, beta, rm, rv = checks.bn_inputs(rng, (3, 2, 2, 3))
    dout = rng.standard_normal(x.shape)
    _, cache = batchnorm_forward(x, gamma, beta, rm.copy(), rv.copy(), True, 0.1, 1e-14)
    _, cache2 = batchnorm_forward(scale * x + shift, gamma, beta, rm.copy(), rv.copy(), True, 0.1, 1e-14)
    dx, dgamma, _ = batchnorm_backward(dout, cache)
    dx2, dgamma2, _ = batchnorm_backward(dout, cache2)
    checks.check_array(f"batchnorm_backward at {scale:.4g}·x + {shift:.4g}: dx (expected dx at x / {scale:.4g})",
                       dx2, dx / scale, 1e-6)
    checks.check_array(f"batchnorm_backward at {scale:.4g}·x + {shift:.4g}: dgamma (expected that at x)",
                       dgamma2, dgamma, 1e-6)


weights = st.builds(lambda seed, rows, cols, scale: np.random.default_rng(seed).standard_normal((rows, cols)) * scale,
                    st.integers(0, 2**32 - 1), st.integers(1, 6), st.integers(1, 12),
                    st.sampled_from([2.0 ** k for k in range(-6, 7)]))


@pytest.mark.task3
@PROPERTY
@SEEDED
@given(weights, st.sampled_from([0.05, 0.1, 0.3, 0.7]), st.sampled_from([0.25, 4.0]))
def test_quantizer_symmetry_and_scale(w, delta, c):
    """Δ(c·W) = c·Δ(W), T(−W) = −T(W), T(c·W, c·Δ) = T(W, Δ), and Δ ≤ α ≤ max|W|."""
    d = threshold(w, delta)
    checks.check_number(f"threshold({c}·W {w.shape}, {delta}) (c times threshold(W))", threshold(c * w, delta),
                        c * float(d), 1e-12)
    t = np.asarray(ternary_codes(w, d))
    checks.check_array(f"ternary_codes(−W {w.shape}, Δ) (−ternary_codes(W, Δ))", ternary_codes(-w, d), -t)
    checks.check_array(f"ternary_codes({c}·W {w.shape}, {c}·Δ) (ternary_codes(W, Δ))", ternary_codes(c * w, c * d), t)
    a = float(alpha(w, d))
    if not float(d) <= a <= float(np.max(np.abs(w))):
        checks.fail(f"alpha(W {w.shape}, Δ = {float(d):.6g}) = {a:.6g}: expected Δ ≤ α ≤ max|W| = "
                    f"{float(np.max(np.abs(w))):.6g} (the mean of magnitudes between the two)")


@pytest.mark.task4
@PROPERTY
@SEEDED
@given(weights, st.sampled_from([1, 2, 4]), st.floats(0.1, 3.0), st.floats(-4.0, 4.0))
def test_ste_is_linear_and_zero_outside_the_clip(w, t_ex, clip, a):
    g = np.random.default_rng(w.size).standard_normal(w.shape)
    got = np.asarray(straight_through_gradient(g, w, t_ex, clip))
    checks.check_array(f"straight_through_gradient({a:.4g}·dW_eff, W, {t_ex}, {clip:.4g}) (linear in dW_eff)",
                       straight_through_gradient(a * g, w, t_ex, clip), a * got, 1e-12)
    outside = np.abs(w) >= clip
    if np.any(got[outside] != 0):
        checks.fail(f"straight_through_gradient(dW_eff, W, {t_ex}, clip={clip:.4g}): non-zero where |W| ≥ clip")


@pytest.mark.task5
@PROPERTY
@SEEDED
@given(st.integers(0, 2**32 - 1), st.sampled_from([1, 2, 4]), st.sampled_from([np.float32, np.float64]))
def test_effective_weight_of_one_expansion_is_alpha_times_codes(seed, t_ex, dtype):
    rng = np.random.default_rng(seed)
    codes = [rng.integers(-1, 2, (4, 6)).astype(np.int8) for _ in range(t_ex)]
    alphas = rng.uniform(0.1, 2.0, t_ex)
    expansions = [Ternarized(c, float(a), 0.1) for c, a in zip(codes, alphas)]
    expected = np.zeros((4, 6))
    for c, a in zip(codes, alphas):
        expected = expected + a * c
    checks.check_array(f"effective_weight({t_ex} expansions, dtype={np.dtype(dtype)})",
                       effective_weight(expansions, dtype), expected.astype(dtype), 1e-6)
