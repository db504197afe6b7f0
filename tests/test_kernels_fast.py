"""The fast backend's kernels (channels-last convolution, fused batch norm,
ReLU, the NaN scan, the one-pass quantizer, the thread splitter) against
their naive twins, plus a run with the JIT switched off.  (Both backends
against each other, operation by operation: tests/test_backends.py.)

Float64 comparisons are (near) exact; float32 ones use a tolerance scaled
to the largest entry, as in tests/test_conv.py.
"""

import os
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from nojit import run_without_jit  # tests/nojit.py

from tqref import nn
from tqref.functional import (
    batchnorm_relu_backward_naive,
    batchnorm_relu_forward_naive,
    conv2d_backward_naive,
    conv2d_forward_naive,
    relu_backward_naive,
    relu_forward_naive,
)
from tqref.gradcheck import check_gradient, check_module_gradients
from tqref.kernels import blas, parallel
from tqref.kernels import conv_nhwc as kc
from tqref.kernels.layout import is_channels_last, to_nchw, to_nhwc
from tqref.kernels.ops import (  # the fast backend's operations
    batchnorm_relu_backward,
    batchnorm_relu_forward,
    conv2d_backward,
    conv2d_forward,
    relu_backward,
    relu_forward,
    ternarize_expansions,
)
from tqref.kernels.reduce import all_finite
from tqref.ternary.quantize import effective_weight
from tqref.ternary.quantize import ternarize_expansions as ternarize_expansions_reference

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def close(actual, expected, rtol, name):
    assert actual.shape == expected.shape, f"{name}: shape {actual.shape} != {expected.shape}"
    assert actual.dtype == expected.dtype, f"{name}: dtype {actual.dtype} != {expected.dtype}"
    scale = max(float(np.max(np.abs(expected))), 1e-30)
    err = float(np.max(np.abs(actual.astype(np.float64) - expected.astype(np.float64))))
    assert err <= rtol * scale, f"{name}: max abs error {err:.3e} > {rtol:.0e} * {scale:.3e}"


# ----------------------------------------------------------------------------
# channels-last im2col / col2im / row columns
# ----------------------------------------------------------------------------

GRID = [(k, s, p) for k in [(1, 1), (3, 3), (3, 2)] for s in [1, 2] for p in [0, 1, 2]]


@pytest.mark.parametrize("kernel, stride, padding", GRID)
def test_im2col_col2im_nhwc_match_naive_and_are_adjoint(kernel, stride, padding):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 7, 5, 4))  # (N, H, W, C), odd sizes
    HH, WW = kernel
    cols = kc.im2col_nhwc(x, 1, 3, HH, WW, stride, padding, padding)
    np.testing.assert_array_equal(cols, kc.im2col_nhwc_naive(x, 1, 3, HH, WW, stride, padding, padding))
    c = rng.standard_normal(cols.shape)
    dx = kc.col2im_nhwc(c, np.zeros_like(x), 1, 3, HH, WW, stride, padding, padding)
    dx_n = kc.col2im_nhwc_naive(c, np.zeros_like(x), 1, 3, HH, WW, stride, padding, padding)
    close(dx, dx_n, 1e-13, "col2im")
    assert np.all(dx[0] == 0)  # images outside [n0, n1) untouched
    # ⟨im2col(x), c⟩ = ⟨x, col2im(c)⟩
    assert abs(np.sum(cols * c) - np.sum(x * dx)) < 1e-10 * np.sqrt(c.size)


@pytest.mark.parametrize("WW, pad", [(3, 1), (3, 0), (1, 0), (3, 2)])
def test_row_columns_match_naive(WW, pad):
    x = np.random.default_rng(1).standard_normal((4, 6, 5, 3)).astype(np.float32)
    Wo = 5 + 2 * pad - WW + 1
    out = np.full((2 * (6 + 2 * pad) * Wo, WW * 3), np.nan, np.float32)
    kc._row_cols_kernel(x, 1, 3, out, WW, pad, pad, Wo)
    np.testing.assert_array_equal(out, kc.row_cols_nhwc_naive(x, 1, 3, WW, pad, pad))


# ----------------------------------------------------------------------------
# gemm (BLAS from inside Numba) against its loop twin and numpy
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-13), (np.float32, 1e-5)], ids=["f64", "f32"])
def test_gemm_matches_loops_and_numpy(trans_a, trans_b, dtype, rtol):
    rng = np.random.default_rng(5)
    m, n, k = 7, 5, 9
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(dtype)
    c0 = rng.standard_normal((m, n)).astype(dtype)
    expected = (a.T if trans_a else a) @ (b.T if trans_b else b) + 0.5 * c0
    for fn in (blas.gemm, blas.gemm_naive):
        c = c0.copy()
        fn(a, b, c, 0.5, trans_a, trans_b)
        close(c, expected, rtol, fn.__name__)
    c = np.full((m, n), np.nan, dtype)  # β = 0 must ignore what c held, NaN included
    blas.gemm(a, b, c, 0.0, trans_a, trans_b)
    close(c, expected - 0.5 * c0, rtol, "beta 0")


def test_gemm_refuses_what_would_read_out_of_bounds():
    a, b = np.ones((4, 3), np.float32), np.ones((3, 2), np.float32)
    with pytest.raises(ValueError, match="shapes"):
        blas.gemm(a, b, np.ones((4, 3), np.float32))
    with pytest.raises(ValueError, match="C-contiguous"):
        blas.gemm(np.ones((3, 4), np.float32).T, b, np.ones((4, 2), np.float32))
    with pytest.raises(ValueError, match="dtype"):
        blas.gemm(a, b.astype(np.float64), np.ones((4, 2), np.float32))


def test_conv_without_blas_falls_back_to_loops(tmp_path):
    """TQREF_BLAS=loops: the kernels call gemm_naive instead (fresh Numba
    cache, since the cached kernels were compiled against BLAS)."""
    code = textwrap.dedent("""
        import numpy as np
        from tqref.kernels import blas
        from tqref.functional import conv2d_backward_naive, conv2d_forward_naive
        from tqref.kernels.ops import conv2d_backward, conv2d_forward
        assert blas.gemm is blas.gemm_naive, blas.BLAS
        rng = np.random.default_rng(0)
        x, w = rng.standard_normal((3, 4, 6, 6)), rng.standard_normal((5, 4, 3, 3))
        for stride in (1, 2):
            out, cache = conv2d_forward(x, w, None, stride, 1)
            ref, cache_n = conv2d_forward_naive(x, w, None, stride, 1)
            assert np.allclose(out, ref, atol=1e-12)
            d = rng.standard_normal(ref.shape)
            for a, b in zip(conv2d_backward(d, cache)[:2], conv2d_backward_naive(d, cache_n)[:2]):
                assert np.allclose(a, b, atol=1e-12)
        print("ok")
    """)
    env = dict(os.environ, TQREF_BLAS="loops", NUMBA_CACHE_DIR=str(tmp_path))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO_ROOT)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]


# ----------------------------------------------------------------------------
# the convolution, at ResNet shapes and with both threads
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("C, F, hw, stride", [(3, 16, 12, 1), (16, 16, 10, 1), (16, 32, 10, 2), (8, 8, 5, 1),
                                              (32, 32, 7, 1), (64, 32, 6, 1)])  # the last two: Winograd
@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-12), (np.float32, 2e-5)], ids=["f64", "f32"])
def test_conv_fast_equals_naive_at_resnet_shapes(C, F, hw, stride, dtype, rtol):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((5, C, hw, hw)).astype(dtype)  # 5 images: uneven split over threads
    w = rng.standard_normal((F, C, 3, 3)).astype(dtype)
    out_f, cache_f = conv2d_forward(x, w, None, stride, 1)
    out_n, cache_n = conv2d_forward_naive(x, w, None, stride, 1)
    assert is_channels_last(out_f)
    close(out_f, out_n, rtol, "out")
    dout = rng.standard_normal(out_n.shape).astype(dtype)
    dx_f, dw_f, _ = conv2d_backward(to_nchw(np.ascontiguousarray(to_nhwc(dout))), cache_f)
    dx_n, dw_n, _ = conv2d_backward_naive(dout, cache_n)
    close(dx_f, dx_n, rtol, "dx")
    close(dw_f, dw_n, rtol, "dw")


def test_conv_with_padding_beyond_the_kernel_uses_the_scatter_path():
    # stride 1 but pad > k − 1: dx is not a flipped convolution; col2im path
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 2, 5, 4))
    w = rng.standard_normal((3, 2, 3, 3))
    out_f, cache_f = conv2d_forward(x, w, None, 1, 3)
    out_n, cache_n = conv2d_forward_naive(x, w, None, 1, 3)
    close(out_f, out_n, 1e-12, "out")
    dout = rng.standard_normal(out_n.shape)
    for a, b, name in zip(conv2d_backward(dout, cache_f)[:2], conv2d_backward_naive(dout, cache_n)[:2], "xw"):
        close(a, b, 1e-12, "d" + name)


def test_winograd_is_used_from_16_channels_and_agrees_with_the_direct_kernels(monkeypatch):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((3, 16, 6, 5))
    w = rng.standard_normal((20, 16, 3, 3))
    dout = rng.standard_normal((3, 20, 6, 5))
    calls = []
    for name in ("conv3x3_winograd_nhwc", "conv3x3_winograd_weight_grad_nhwc"):
        real = getattr(kc, name)
        monkeypatch.setattr(kc, name, lambda *a, _real=real, _name=name: calls.append(_name) or _real(*a))
    out, cache = conv2d_forward(x, w, None, 1, 1)
    dx, dw, _ = conv2d_backward(dout, cache)
    # forward, weight gradient, input gradient
    assert calls == ["conv3x3_winograd_nhwc", "conv3x3_winograd_weight_grad_nhwc", "conv3x3_winograd_nhwc"]
    monkeypatch.setattr(kc, "WINOGRAD_MIN_CHANNELS", None)
    out_d, cache_d = conv2d_forward(x, w, None, 1, 1)
    dx_d, dw_d, _ = conv2d_backward(dout, cache_d)
    assert len(calls) == 3
    close(out, out_d, 1e-13, "out")
    close(dx, dx_d, 1e-13, "dx")
    close(dw, dw_d, 1e-13, "dw")
    monkeypatch.setattr(kc, "WINOGRAD_MIN_CHANNELS", 16)
    x3 = rng.standard_normal((2, 3, 6, 6))  # the first layer: 3 channels, direct kernels
    _, cache3 = conv2d_forward(x3, rng.standard_normal((16, 3, 3, 3)), None, 1, 1)
    conv2d_backward(rng.standard_normal((2, 16, 6, 6)), cache3)
    assert len(calls) == 3


def test_conv_on_one_thread_equals_two(monkeypatch):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((4, 8, 8, 8))
    w = rng.standard_normal((8, 8, 3, 3))
    out2, cache = conv2d_forward(x, w, None, 1, 1)
    grads2 = conv2d_backward(np.ones_like(out2), cache)
    monkeypatch.setattr(parallel, "num_threads", lambda: 1)
    out1, cache = conv2d_forward(x, w, None, 1, 1)
    grads1 = conv2d_backward(np.ones_like(out1), cache)
    close(out1, out2, 1e-13, "out")
    for a, b in zip(grads1[:2], grads2[:2]):
        close(a, b, 1e-12, "grad")


# ----------------------------------------------------------------------------
# fused batch norm + residual + ReLU
# ----------------------------------------------------------------------------

def _bn_inputs(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    C = shape[1]
    x = (rng.normal(2.0, 1.5, shape) * rng.uniform(0.5, 2.0, (1, C, 1, 1))).astype(dtype)
    params = [rng.uniform(0.5, 1.5, C).astype(dtype), rng.normal(0, 1, C).astype(dtype),
              rng.normal(0, 1, C).astype(dtype), rng.uniform(0.5, 2.0, C).astype(dtype)]
    res = rng.normal(0, 1, shape).astype(dtype)
    # |dout| ≥ 0.5: a numeric gradient's relative error means little on tiny entries
    dout = (rng.choice([-1, 1], shape) * rng.uniform(0.5, 1.5, shape)).astype(dtype)
    return x, params, res, dout


@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-10), (np.float32, 2e-5)], ids=["f64", "f32"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("with_residual", [False, True], ids=["plain", "residual"])
# (64, 8, 8, 8) crosses the threading threshold; the rows are folded (see
# tqref.kernels.ops.FOLD_WIDTH) k = 8, 4, 2 pixels at a time for
# (64, 8, 8, 8), (5, 16, 4, 4), (4, 32, 6, 6), and not at all (M not a
# multiple of k) for (3, 4, 5, 6) and (3, 16, 3, 3)
@pytest.mark.parametrize("shape", [(3, 4, 5, 6), (64, 8, 8, 8), (5, 16, 4, 4), (4, 32, 6, 6), (3, 16, 3, 3)])
def test_batchnorm_relu_fast_equals_naive(dtype, rtol, training, with_residual, shape):
    x, (g, b, rm, rv), res, dout = _bn_inputs(shape, dtype)
    res = res if with_residual else None
    rm_f, rv_f, rm_n, rv_n = rm.copy(), rv.copy(), rm.copy(), rv.copy()
    out_f, cache_f = batchnorm_relu_forward(x, g, b, rm_f, rv_f, training, 0.3, 1e-5, residual=res)
    out_n, cache_n = batchnorm_relu_forward_naive(x, g, b, rm_n, rv_n, training, 0.3, 1e-5, residual=res)
    close(out_f, out_n, rtol, "out")
    close(rm_f, rm_n, rtol, "running_mean")
    close(rv_f, rv_n, rtol, "running_var")
    for name, a, c in zip(("dx", "dgamma", "dbeta", "dsum"), batchnorm_relu_backward(dout, cache_f),
                          batchnorm_relu_backward_naive(dout, cache_n)):
        close(a, c, rtol * 10, name)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_batchnorm_relu_gradients_match_numeric(training):
    x, (g, b, rm, rv), res, dout = _bn_inputs((2, 3, 4, 3), np.float64, seed=5)

    def f():
        return batchnorm_relu_forward(x, g, b, rm.copy(), rv.copy(), training, residual=res)[0]

    _, cache = batchnorm_relu_forward(x, g, b, rm.copy(), rv.copy(), training, residual=res)
    dx, dg, db, dsum = batchnorm_relu_backward(dout, cache)
    check_gradient(f, x, dx, dout, tol=1e-6, name="x")
    check_gradient(f, g, dg, dout, tol=1e-6, name="gamma")
    check_gradient(f, b, db, dout, tol=1e-6, name="beta")
    check_gradient(f, res, dsum, dout, tol=1e-6, name="residual")


def test_basic_block_fused_equals_unfused_layers():
    block = nn.BasicBlock(4, 8, stride=2, rng=0).astype(np.float64)
    x = np.random.default_rng(6).standard_normal((3, 4, 6, 6))
    out = block.forward(x)
    # the same block, layer by layer, with the plain (unfused) forward of each module
    h = block.relu1.forward(block.bn1.forward(block.conv1.forward(x)))
    h = block.bn2.forward(block.conv2.forward(h))
    ref = block.relu2.forward(h + block.shortcut.forward(x))
    close(out, ref, 1e-12, "block output")
    errors = check_module_gradients(block, x, n_directions=2, rng=np.random.default_rng(0))
    assert max(errors) < 1e-6


# ----------------------------------------------------------------------------
# ReLU, layouts, the NaN scan
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_relu_fast_equals_naive_in_both_layouts(layout):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((130, 4, 16, 8)).astype(np.float32)  # > threading threshold
    if layout == "channels_last":
        x = to_nchw(np.ascontiguousarray(to_nhwc(x)))
    dout = rng.standard_normal(x.shape).astype(np.float32)  # C order: a layout mismatch on purpose
    out_f, cache_f = relu_forward(x)
    out_n, cache_n = relu_forward_naive(x)
    assert is_channels_last(out_f) == (layout == "channels_last")
    np.testing.assert_array_equal(out_f, out_n)
    np.testing.assert_array_equal(relu_backward(dout, cache_f), relu_backward_naive(dout, cache_n))


def test_naive_elementwise_twins_accept_channels_last_input():
    # they flatten with reshape(-1); their outputs must not be views that reshape copies
    from tqref.functional import add_forward, add_forward_naive
    x = to_nchw(np.random.default_rng(10).standard_normal((2, 5, 4, 3)))
    np.testing.assert_array_equal(relu_forward_naive(x)[0], np.maximum(x, 0))
    np.testing.assert_array_equal(relu_backward_naive(x, x), np.where(x > 0, x, 0))
    np.testing.assert_array_equal(add_forward_naive(x, x)[0], add_forward(x, x)[0])


@pytest.mark.parametrize("shape", [(3, 5), (2, 3, 4, 5), (70, 8, 16, 16)])
def test_all_finite_finds_every_nan_and_inf(shape):
    rng = np.random.default_rng(8)
    for layout in ("c", "channels_last", "strided"):
        x = rng.standard_normal(shape).astype(np.float32)
        if layout == "channels_last" and x.ndim == 4:
            x = to_nchw(np.ascontiguousarray(to_nhwc(x)))
        if layout == "strided":
            x = np.repeat(x, 2, axis=-1)[..., ::2]
        assert all_finite(x)
        for value in (np.nan, np.inf, -np.inf):
            for idx in ((0,) * x.ndim, tuple(s - 1 for s in x.shape)):
                y = x.copy(order="K")
                y[idx] = value
                assert not all_finite(y), (layout, value, idx)


# ----------------------------------------------------------------------------
# the one-pass quantizer
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("factors", [(0.05,), (0.05, 0.10), (0.05, 0.10, 0.15, 0.20)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_quantizer_kernel_equals_naive(factors, dtype):
    rng = np.random.default_rng(9)
    w = rng.standard_normal((16, 8, 3, 3)).astype(dtype)
    m = float(np.abs(w).max())
    w[0, 0, 0, :2] = [0.05 * m, -0.05 * m]  # ties at ±Δ_1 (exactly, when representable)
    w[1, 0, 0, 0] = -m
    fast = ternarize_expansions(w, factors)
    naive = ternarize_expansions_reference(w, factors)
    for a, b in zip(fast, naive):
        np.testing.assert_array_equal(a.codes, b.codes)
        assert a.codes.dtype == np.int8 and a.codes.shape == w.shape
        assert a.threshold == b.threshold
        assert abs(a.alpha - b.alpha) <= 1e-13 * b.alpha
    close(effective_weight(fast, dtype), effective_weight(naive, dtype), 1e-7, "W_eff")


def test_quantizer_kernel_all_zero_weight():
    w = np.zeros((4, 3, 3, 3), np.float32)
    for a in ternarize_expansions(w, (0.05, 0.10)):
        assert a.alpha == 0.0 and a.threshold == 0.0 and not a.codes.any()


# ----------------------------------------------------------------------------
# the thread splitter
# ----------------------------------------------------------------------------

def test_parallel_for_covers_the_range_once_and_reraises():
    seen = []
    parallel.parallel_for(lambda t, a, b: seen.append((t, a, b)), 11)
    covered = sorted(i for _, a, b in seen for i in range(a, b))
    assert covered == list(range(11))
    assert len({t for t, _, _ in seen}) == len(seen)

    def boom(t, a, b):
        if t == len(seen) - 1:
            raise RuntimeError("slice failed")

    with pytest.raises(RuntimeError, match="slice failed"):
        parallel.parallel_for(boom, 11)


def test_parallel_for_restores_the_blas_thread_count():
    before = [c.get_num_threads() for c in parallel._blas_controllers()]
    parallel.parallel_for(lambda t, a, b: None, 8)
    assert [c.get_num_threads() for c in parallel._blas_controllers()] == before


# ----------------------------------------------------------------------------
# with the JIT switched off
# ----------------------------------------------------------------------------

_NOJIT_SCRIPT = textwrap.dedent(
    """
    import sys
    import numba
    import numpy as np
    from tqref import nn
    from tqref.kernels import batchnorm, blas, conv_nhwc, elementwise, quantize, reduce, sgd
    from tqref.kernels.ops import ternarize_expansions

    assert numba.config.DISABLE_JIT, "NUMBA_DISABLE_JIT was not honoured"
    assert (blas.gemm is blas.gemm_naive) == (blas._found is None), blas.BLAS  # BLAS through ctypes if found
    for f in (conv_nhwc._row_cols_kernel, conv_nhwc._im2col_kernel, conv_nhwc._stride1_forward_images,
              conv_nhwc._im2col_backward_images, blas.gemm, sgd.sgd_update, batchnorm.apply,
              elementwise.relu_forward, reduce._count_not_finite, quantize._codes_and_sums):
        assert not hasattr(f, "py_func"), f

    rng = np.random.default_rng(12)
    block = nn.BasicBlock(2, 4, stride=2, rng=0).astype(np.float64)
    x = rng.standard_normal((2, 2, 6, 5))
    out = block.forward(x)
    dx = block.backward(rng.standard_normal(out.shape))
    grads = {k: v.copy() for k, v in block.named_gradients()}
    codes = np.stack([t.codes for t in ternarize_expansions(rng.standard_normal((4, 2, 3, 3)), (0.05, 0.1))])
    np.savez(sys.argv[1], out=out, dx=dx, codes=codes, **grads)
    """
)


def test_fast_kernels_run_with_jit_disabled(tmp_path):
    nojit = run_without_jit(_NOJIT_SCRIPT, tmp_path)

    rng = np.random.default_rng(12)
    block = nn.BasicBlock(2, 4, stride=2, rng=0).astype(np.float64)
    x = rng.standard_normal((2, 2, 6, 5))
    out = block.forward(x)
    dx = block.backward(rng.standard_normal(out.shape))
    close(nojit["out"], out, 1e-12, "out")
    close(nojit["dx"], dx, 1e-12, "dx")
    for k, v in block.named_gradients():
        close(nojit[k], v, 1e-12, k)
    codes = np.stack([t.codes for t in ternarize_expansions(rng.standard_normal((4, 2, 3, 3)), (0.05, 0.1))])
    np.testing.assert_array_equal(nojit["codes"], codes)
