"""Winograd F(2×2, 3×3) (tqref.kernels.winograd): the fast kernel against its
naive twin, and both against the direct convolutions
(``conv_nhwc.conv_forward_nhwc`` and ``functional.conv2d_forward_naive``).

Tolerances, relative to the largest |output| (``close`` below):

* float64: 1e-12.  Only rounding separates the algorithms; measured ≤ 2e-15.
* float32: 1e-5, against the exact (float64) convolution of the same float32
  inputs.  Why that much: Winograd's intermediate values are larger than the
  result (V sums 4 inputs with ±1, U up to 9 weights, Y 9 products), and
  each output collects C + a few roundings, so its float32 error is somewhat
  larger than direct convolution's.  Measured on random data: max error
  1–4e-7 of max |out| for C = 3…64 (direct convolution: 1–4e-7 too, its rms
  error 1.2–1.8× smaller), 7e-7 at C = 256.  1e-5 ≈ 170 u (u = 2⁻²⁴ ≈ 6e-8,
  the float32 unit roundoff) leaves a margin of 30× at the tested C ≤ 64,
  while a wrong transform entry, tile or padding shows up as an error of
  1e-2 and more.
* float32, elementwise: the rounding-error bound that holds for every input
  (``test_float32_error_is_within_the_rounding_bound``).

The weight gradient (``conv3x3_winograd_weight_grad_nhwc``), relative to the
largest |dw|, with the same F64_RTOL and F32_RTOL:

* float64: only rounding again; measured ≤ 1e-15.
* float32: each dw[f, c, p, q] sums P = N·H_out·W_out products x · dout
  (direct) or N·tiles products V · Z (Winograd, whose V and Z sum 2–4
  inputs each), so its error grows slowly with P.  Measured on random data,
  max error / max |dw|: 0.6–3.4e-7 at the tested shapes (P ≤ 320; direct
  kernel 0.2–3.0e-7), 6.7e-7 at a ResNet-20 layer of 128 images
  (P = 131 072; direct 6.5e-7).  1e-5 leaves a margin of 30× here and 15×
  at that P, while a wrong transform entry, a missing zero past an odd edge
  or a lost image changes dw by 1e-2 and more.
* float32, elementwise: a proven rounding-error bound
  (``test_weight_grad_float32_error_is_within_the_rounding_bound``).
"""

import textwrap

import numpy as np
import pytest
from nojit import run_without_jit  # tests/nojit.py

from tqref.functional import conv2d_backward_naive, conv2d_forward_naive
from tqref.kernels import conv_nhwc as kc
from tqref.kernels import parallel
from tqref.kernels import winograd as wg

F32_RTOL = 1e-5
F64_RTOL = 1e-12


def close(actual, expected, rtol, name):
    assert actual.shape == expected.shape, f"{name}: shape {actual.shape} != {expected.shape}"
    scale = max(float(np.max(np.abs(expected))), 1e-30)
    err = float(np.max(np.abs(actual.astype(np.float64) - expected.astype(np.float64))))
    assert err <= rtol * scale, f"{name}: max abs error {err:.3e} > {rtol:.0e} * {scale:.3e}"


def inputs(N, H, W, C, F, dtype, seed=0):
    """x (N, H, W, C) ~ N(0, 1), w (F, C, 3, 3) with He scaling (outputs of order 1)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, H, W, C)).astype(dtype)
    w = (rng.standard_normal((F, C, 3, 3)) * np.sqrt(2 / (9 * C))).astype(dtype)
    return x, w


# (N, H, W, C, F, padding): odd N (uneven split over two threads), odd and
# even H/W, so odd and even H_out/W_out; C of the ResNet stages and its input
SHAPES = [
    (5, 8, 8, 16, 16, 1),
    (3, 7, 9, 16, 16, 1),
    (3, 7, 5, 3, 16, 1),
    (1, 6, 6, 32, 32, 1),
    (3, 5, 5, 64, 64, 1),
    (2, 8, 8, 32, 16, 0),
    (3, 5, 6, 16, 8, 0),
    (3, 4, 7, 3, 16, 2),
    (2, 3, 3, 64, 32, 2),
    (5, 1, 2, 16, 4, 1),   # a single row of output pixels
    (1, 3, 3, 4, 5, 0),    # a single output pixel: one tile, three of its four outputs dropped
]
SHAPE_IDS = ["x".join(map(str, s[:5])) + f"-p{s[5]}" for s in SHAPES]


# ----------------------------------------------------------------------------
# the algorithm
# ----------------------------------------------------------------------------

def test_transform_matrices_compute_a_2x2_correlation():
    """One tile, one channel pair: Aᵀ[(G g Gᵀ) ⊙ (Bᵀ d B)]A = the 2×2 outputs
    of the 3×3 correlation of d (4×4) with g (3×3)."""
    rng = np.random.default_rng(0)
    d, g = rng.standard_normal((4, 4)), rng.standard_normal((3, 3))
    Y = wg.A.T @ ((wg.G @ g @ wg.G.T) * (wg.B.T @ d @ wg.B)) @ wg.A
    direct = np.array([[np.sum(d[i : i + 3, j : j + 3] * g) for j in range(2)] for i in range(2)])
    np.testing.assert_allclose(Y, direct, rtol=0, atol=1e-14)
    assert wg.B.shape == (4, 4) and wg.G.shape == (4, 3) and wg.A.shape == (4, 2)


def test_weight_transform_layout():
    w = np.random.default_rng(1).standard_normal((5, 3, 3, 3))
    U = wg.winograd_weights(w, np.float64)
    assert U.shape == (16, 3, 5) and U.flags.c_contiguous
    for f, c, xi, nu in [(0, 0, 0, 0), (4, 2, 3, 1), (2, 1, 1, 2)]:
        assert abs(U[4 * xi + nu, c, f] - (wg.G @ w[f, c] @ wg.G.T)[xi, nu]) < 1e-14


# ----------------------------------------------------------------------------
# fast = naive = direct
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_fast_equals_naive_float64(shape):
    N, H, W, C, F, pad = shape
    x, w = inputs(N, H, W, C, F, np.float64)
    fast = wg.conv3x3_winograd_nhwc(x, w, pad)
    naive = wg.conv3x3_winograd_nhwc_naive(x, w, pad)
    assert fast.shape == (N, H + 2 * pad - 2, W + 2 * pad - 2, F)
    assert fast.dtype == np.float64 and fast.flags.c_contiguous
    close(fast, naive, 1e-13, "fast vs naive")


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_winograd_equals_direct_convolution(shape, dtype):
    N, H, W, C, F, pad = shape
    x, w = inputs(N, H, W, C, F, dtype, seed=2)
    # the exact convolution of these (rounded) inputs, to float64 precision
    exact = kc.conv_forward_nhwc(x.astype(np.float64), w.astype(np.float64), 1, pad)
    rtol = F64_RTOL if dtype == np.float64 else F32_RTOL
    fast = wg.conv3x3_winograd_nhwc(x, w, pad)
    naive = wg.conv3x3_winograd_nhwc_naive(x, w, pad)
    assert fast.dtype == dtype and naive.dtype == dtype
    close(fast, exact, rtol, "fast vs exact")
    close(naive, exact, rtol, "naive vs exact")
    close(fast, kc.conv_forward_nhwc(x, w, 1, pad), rtol, "fast vs conv_forward_nhwc")
    ref, _ = conv2d_forward_naive(np.ascontiguousarray(x.transpose(0, 3, 1, 2)), w, None, 1, pad)
    close(fast, ref.transpose(0, 2, 3, 1), rtol, "fast vs conv2d_forward_naive")
    close(naive, ref.transpose(0, 2, 3, 1), rtol, "naive vs conv2d_forward_naive")


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_float32_error_is_within_the_rounding_bound(shape, monkeypatch):
    """Elementwise, for any inputs:

        |Ŷ − Y| ≤ γ_K · |Aᵀ| [ Σ_c (|G| |g| |Gᵀ|) ⊙ (|Bᵀ| |d| |B|) ] |A|,   γ_K = K·u / (1 − K·u)

    Y expands into a sum of terms (transform entries) · g · d; the entries are
    0, ±1, ±½, ±¼, so multiplying by them is exact, and every term collects at
    most K relative rounding errors of size ≤ u on its way to Y: C in the sum
    over channels, a handful in the transforms (fast: 1 for U, 2 for V, 4 for
    Y; naive: up to 18).  K = C + 20.  The right side is the same algorithm on
    absolute values: the naive twin with |B|, |G|, |A|, |x|, |w|.  The bound
    is loose (measured errors are 20–300× below it) but proven, not fitted.
    """
    N, H, W, C, F, pad = shape
    x, w = inputs(N, H, W, C, F, np.float32, seed=3)
    exact = kc.conv_forward_nhwc(x.astype(np.float64), w.astype(np.float64), 1, pad)
    fast = wg.conv3x3_winograd_nhwc(x, w, pad)
    naive = wg.conv3x3_winograd_nhwc_naive(x, w, pad)
    for name in ("B", "G", "A"):
        monkeypatch.setattr(wg, name, np.abs(getattr(wg, name)))
    magnitude = wg.conv3x3_winograd_nhwc_naive(np.abs(x).astype(np.float64), np.abs(w).astype(np.float64), pad)
    u = np.finfo(np.float32).eps / 2
    K = C + 20
    bound = K * u / (1 - K * u) * magnitude
    for name, y in (("fast", fast), ("naive", naive)):
        err = np.abs(y.astype(np.float64) - exact)
        assert np.all(err <= bound), f"{name}: max err / bound = {np.max(err / bound):.2f}"


@pytest.mark.parametrize("pad", [0, 1, 2])
def test_stride1_input_gradient_is_a_winograd_convolution(pad):
    """dx of a stride-1 convolution = dout convolved with the kernel flipped in
    space and transposed in (f, c), padding 2 − pad (what conv_nhwc computes
    with its forward kernel): the same call works through Winograd."""
    x, w = inputs(3, 7, 6, 16, 32, np.float64, seed=5)
    dout = np.random.default_rng(6).standard_normal((3, 7 + 2 * pad - 2, 6 + 2 * pad - 2, 32))
    dx, _ = kc.conv_backward_nhwc(x, w, dout, 1, pad)
    w_flip = w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)        # (C, F, 3, 3)
    close(wg.conv3x3_winograd_nhwc(dout, w_flip, 2 - pad), dx, F64_RTOL, "dx")


# ----------------------------------------------------------------------------
# threads, blocks, the JIT switched off, bad input
# ----------------------------------------------------------------------------

def test_one_thread_equals_two_and_block_size_does_not_matter(monkeypatch):
    x, w = inputs(7, 9, 8, 16, 32, np.float64, seed=4)   # 7 images: 3 + 4 over two threads
    two = wg.conv3x3_winograd_nhwc(x, w, 1)
    one_image_blocks = wg.conv3x3_winograd_nhwc(x, w, 1, block_bytes=1)
    monkeypatch.setattr(parallel, "num_threads", lambda: 1)
    one = wg.conv3x3_winograd_nhwc(x, w, 1)
    one_big_block = wg.conv3x3_winograd_nhwc(x, w, 1, block_bytes=1 << 30)
    for name, y in (("one thread", one), ("blocks of one image", one_image_blocks),
                    ("one block", one_big_block)):
        close(y, two, 1e-13, name)


_NOJIT_SCRIPT = textwrap.dedent(
    """
    import sys
    import numba
    import numpy as np
    from tqref.kernels import winograd as wg

    assert numba.config.DISABLE_JIT, "NUMBA_DISABLE_JIT was not honoured"
    for f in (wg._winograd_images, wg._split_columns, wg._input_transform, wg._input_transform_row,
              wg._output_transform_row, wg._store_row, wg._add3, wg._weight_transform,
              wg._winograd_weight_grad_images, wg._grad_transform_row, wg._weight_grad_transform):
        assert not hasattr(f, "py_func"), f
    rng = np.random.default_rng(13)
    x, w = rng.standard_normal((3, 5, 4, 3)), rng.standard_normal((4, 3, 3, 3))
    d1, d0 = rng.standard_normal((3, 5, 4, 4)), rng.standard_normal((3, 3, 2, 4))  # odd H_out = 5, 3
    np.savez(sys.argv[1], out1=wg.conv3x3_winograd_nhwc(x, w, 1), out0=wg.conv3x3_winograd_nhwc(x, w, 0),
             dw1=wg.conv3x3_winograd_weight_grad_nhwc(x, d1, 1),
             dw0=wg.conv3x3_winograd_weight_grad_nhwc(x, d0, 0))
    """
)


def test_runs_with_jit_disabled(tmp_path):
    nojit = run_without_jit(_NOJIT_SCRIPT, tmp_path)
    rng = np.random.default_rng(13)
    x, w = rng.standard_normal((3, 5, 4, 3)), rng.standard_normal((4, 3, 3, 3))
    d1, d0 = rng.standard_normal((3, 5, 4, 4)), rng.standard_normal((3, 3, 2, 4))
    close(nojit["out1"], wg.conv3x3_winograd_nhwc(x, w, 1), 1e-13, "padding 1")
    close(nojit["out0"], wg.conv3x3_winograd_nhwc(x, w, 0), 1e-13, "padding 0")
    close(nojit["dw1"], wg.conv3x3_winograd_weight_grad_nhwc(x, d1, 1), 1e-13, "weight gradient, padding 1")
    close(nojit["dw0"], wg.conv3x3_winograd_weight_grad_nhwc(x, d0, 0), 1e-13, "weight gradient, padding 0")
    _, dw = kc.conv_backward_nhwc(x, w, d1, 1, 1, need_dx=False)
    close(nojit["dw1"], dw, F64_RTOL, "weight gradient, padding 1, vs conv_backward_nhwc")


def test_bad_arguments_are_refused():
    x, w = inputs(1, 4, 4, 2, 3, np.float32)
    with pytest.raises(ValueError, match="padding"):
        wg.conv3x3_winograd_nhwc(x, w, 3)
    with pytest.raises(ValueError, match="3, 3"):
        wg.conv3x3_winograd_nhwc(x, w[:, :, :2], 1)
    with pytest.raises(ValueError, match="larger than"):
        wg.conv3x3_winograd_nhwc(x[:, :2], w, 0)
    with pytest.raises(TypeError, match="float32 or float64"):
        wg.conv3x3_winograd_nhwc_naive(x.astype(np.float16), w, 1)
    x, w = inputs(2, 5, 5, 3, 4, np.float32)
    with pytest.raises(ValueError, match="dout must be"):
        wg.conv3x3_winograd_weight_grad_nhwc(x, np.zeros((2, 5, 4, 4), np.float32), 1)
    with pytest.raises(ValueError, match="dout must be"):
        wg.conv3x3_winograd_weight_grad_nhwc_naive(x, np.zeros((1, 5, 5, 4), np.float32), 1)
    with pytest.raises(TypeError, match="same dtype"):
        wg.conv3x3_winograd_weight_grad_nhwc(x, np.zeros((2, 5, 5, 4)), 1)
    with pytest.raises(ValueError, match="padding"):
        wg.conv3x3_winograd_weight_grad_nhwc(x, np.zeros((2, 7, 7, 4), np.float32), 3)


# ----------------------------------------------------------------------------
# the weight gradient: fast = naive = direct
# ----------------------------------------------------------------------------

# SHAPES (odd N, odd and even H_out/W_out, padding 0/1/2, C and F from 3 to
# 64, a single output row and pixel), plus F = 3 and F = 64 with C ≠ F
GRAD_SHAPES = SHAPES + [(3, 5, 6, 16, 3, 0), (3, 6, 5, 32, 64, 2)]
GRAD_IDS = ["x".join(map(str, s[:5])) + f"-p{s[5]}" for s in GRAD_SHAPES]


def grad_inputs(N, H, W, C, F, pad, dtype, seed=0):
    """x (N, H, W, C) and dout (N, H_out, W_out, F), both ~ N(0, 1)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, H, W, C)).astype(dtype)
    dout = rng.standard_normal((N, H + 2 * pad - 2, W + 2 * pad - 2, F)).astype(dtype)
    return x, dout


def direct_dw(x, dout, pad):
    """conv_backward_nhwc's weight gradient (w only supplies the shape)."""
    w = np.zeros((dout.shape[3], x.shape[3], 3, 3), dtype=x.dtype)
    return kc.conv_backward_nhwc(x, w, dout, 1, pad, need_dx=False)[1]


def test_weight_grad_is_the_adjoint_of_the_forward():
    """⟨conv(x, w), dout⟩ = ⟨w, dw⟩ for every w: dw is the forward's adjoint
    in w (in float64, to rounding)."""
    x, dout = grad_inputs(3, 7, 6, 16, 8, 1, np.float64, seed=7)
    dw = wg.conv3x3_winograd_weight_grad_nhwc(x, dout, 1)
    rng = np.random.default_rng(8)
    for _ in range(3):
        w = rng.standard_normal((8, 16, 3, 3))
        lhs = float(np.sum(wg.conv3x3_winograd_nhwc(x, w, 1) * dout))
        assert abs(lhs - float(np.sum(w * dw))) <= 1e-12 * np.sum(np.abs(w * dw))


@pytest.mark.parametrize("shape", GRAD_SHAPES, ids=GRAD_IDS)
def test_weight_grad_fast_equals_naive_float64(shape):
    N, H, W, C, F, pad = shape
    x, dout = grad_inputs(N, H, W, C, F, pad, np.float64)
    fast = wg.conv3x3_winograd_weight_grad_nhwc(x, dout, pad)
    naive = wg.conv3x3_winograd_weight_grad_nhwc_naive(x, dout, pad)
    assert fast.shape == (F, C, 3, 3) and fast.dtype == np.float64 and fast.flags.c_contiguous
    close(fast, naive, 1e-13, "fast vs naive")
    one_image_blocks = wg.conv3x3_winograd_weight_grad_nhwc(x, dout, pad, block_bytes=1)  # M summed over blocks
    close(one_image_blocks, naive, 1e-13, "fast, blocks of one image, vs naive")


@pytest.mark.parametrize("shape", GRAD_SHAPES, ids=GRAD_IDS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_weight_grad_equals_direct(shape, dtype):
    N, H, W, C, F, pad = shape
    x, dout = grad_inputs(N, H, W, C, F, pad, dtype, seed=2)
    exact = direct_dw(x.astype(np.float64), dout.astype(np.float64), pad)  # of these rounded inputs
    rtol = F64_RTOL if dtype == np.float64 else F32_RTOL
    fast = wg.conv3x3_winograd_weight_grad_nhwc(x, dout, pad)
    naive = wg.conv3x3_winograd_weight_grad_nhwc_naive(x, dout, pad)
    assert fast.dtype == dtype and naive.dtype == dtype
    close(fast, exact, rtol, "fast vs exact")
    close(naive, exact, rtol, "naive vs exact")
    close(fast, direct_dw(x, dout, pad), rtol, "fast vs conv_backward_nhwc")
    x_nchw = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    _, cache = conv2d_forward_naive(x_nchw, np.zeros((F, C, 3, 3), dtype), None, 1, pad)
    _, ref, _ = conv2d_backward_naive(np.ascontiguousarray(dout.transpose(0, 3, 1, 2)), cache)
    close(fast, ref, rtol, "fast vs conv2d_backward_naive")
    close(naive, ref, rtol, "naive vs conv2d_backward_naive")


@pytest.mark.parametrize("shape", GRAD_SHAPES, ids=GRAD_IDS)
def test_weight_grad_float32_error_is_within_the_rounding_bound(shape, monkeypatch):
    """Elementwise, for any inputs:

        |dŵ − dw| ≤ γ_K · |Gᵀ| [ Σ_t (|Bᵀ| |d_t| |B|) ⊙ (|A| |δ_t| |Aᵀ|) ] |G|,   γ_K = K·u / (1 − K·u)

    As for the forward: every term (transform entries) · x · dout of dw
    collects at most K relative rounding errors ≤ u, the transform entries
    (0, ±1, ±½) multiply exactly, and the right side is the naive twin on
    absolute values.  K: the sum over the N·th·tw tiles in any order (the
    BLAS chooses, and the per-thread sums are added afterwards) plus a
    handful for the transforms (fast: 2 for V, 2 for Z, 1 for the product,
    1 for the final rounding, G in float64; naive: up to 12).
    K = N·th·tw + 20.
    """
    N, H, W, C, F, pad = shape
    x, dout = grad_inputs(N, H, W, C, F, pad, np.float32, seed=3)
    exact = direct_dw(x.astype(np.float64), dout.astype(np.float64), pad)
    fast = wg.conv3x3_winograd_weight_grad_nhwc(x, dout, pad)
    naive = wg.conv3x3_winograd_weight_grad_nhwc_naive(x, dout, pad)
    for name in ("B", "G", "A"):
        monkeypatch.setattr(wg, name, np.abs(getattr(wg, name)))
    magnitude = wg.conv3x3_winograd_weight_grad_nhwc_naive(np.abs(x).astype(np.float64),
                                                          np.abs(dout).astype(np.float64), pad)
    u = np.finfo(np.float32).eps / 2
    K = N * ((dout.shape[1] + 1) // 2) * ((dout.shape[2] + 1) // 2) + 20
    bound = K * u / (1 - K * u) * magnitude
    for name, y in (("fast", fast), ("naive", naive)):
        err = np.abs(y.astype(np.float64) - exact)
        assert np.all(err <= bound), f"{name}: max err / bound = {np.max(err / bound):.2f}"


def test_weight_grad_one_thread_equals_two_and_block_size_does_not_matter(monkeypatch):
    x, dout = grad_inputs(7, 9, 8, 16, 32, 1, np.float64, seed=4)   # 7 images: 3 + 4 over two threads
    # fill the scratch buffers with an earlier call's numbers: stale values
    # (past the odd edge above all) must not leak into the result
    wg.conv3x3_winograd_weight_grad_nhwc(*grad_inputs(7, 10, 10, 16, 32, 1, np.float64, seed=9), 1)
    two = wg.conv3x3_winograd_weight_grad_nhwc(x, dout, 1)
    one_image_blocks = wg.conv3x3_winograd_weight_grad_nhwc(x, dout, 1, block_bytes=1)
    monkeypatch.setattr(parallel, "num_threads", lambda: 1)
    monkeypatch.setattr(wg, "num_threads", lambda: 1)
    one = wg.conv3x3_winograd_weight_grad_nhwc(x, dout, 1)
    one_big_block = wg.conv3x3_winograd_weight_grad_nhwc(x, dout, 1, block_bytes=1 << 30)
    close(two, direct_dw(x, dout, 1), F64_RTOL, "two threads vs conv_backward_nhwc")
    for name, y in (("one thread", one), ("blocks of one image", one_image_blocks),
                    ("one block", one_big_block)):
        close(y, two, 1e-13, name)
    empty = wg.conv3x3_winograd_weight_grad_nhwc(x[:0], dout[:0], 1)
    assert empty.shape == (32, 16, 3, 3) and not np.any(empty)
