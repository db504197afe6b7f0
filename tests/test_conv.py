"""Tests for tqref.functional.conv and tqref.kernels.im2col.

Layers of trust, bottom to top:
1. the naive forward against numbers worked out by hand;
2. both backwards against central-difference gradients (float64);
3. the fast pair against the naive pair (float64 and float32);
4. the im2col / col2im kernels against their NumPy twins, and col2im as the
   adjoint of im2col;
5. input validation, and the kernels with the JIT switched off.
"""

import textwrap

import numpy as np
import pytest
from nojit import run_without_jit  # tests/nojit.py

from tqref.functional.conv import (
    conv2d_backward,
    conv2d_backward_naive,
    conv2d_forward,
    conv2d_forward_naive,
    conv_output_size,
)
from tqref.gradcheck import numeric_gradient, relative_error
from tqref.kernels import im2col as im2col_module
from tqref.kernels.im2col import col2im, col2im_naive, im2col, im2col_naive

KERNELS = [(1, 1), (3, 3), (5, 5), (3, 2)]
STRIDES = [1, 2, 3]
PADDINGS = [0, 1, 2]
# Odd, non-square spatial size so that row/column mix-ups and the floor in the
# output size both show up.
H, W = 7, 5

GRID = pytest.mark.parametrize(
    "kernel, stride, padding",
    [(k, s, p) for k in KERNELS for s in STRIDES for p in PADDINGS],
    ids=lambda v: "x".join(map(str, v)) if isinstance(v, tuple) else str(v),
)


def make_inputs(kernel, bias, dtype=np.float64, N=2, C=2, F=3, seed=0, hw=(H, W)):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, C) + hw).astype(dtype)
    w = rng.standard_normal((F, C) + kernel).astype(dtype)
    b = rng.standard_normal(F).astype(dtype) if bias else None
    return x, w, b


def assert_close_scaled(actual, expected, rtol, name):
    """max |actual − expected| ≤ rtol · max |expected|.

    Scaled by the largest entry rather than entry by entry: an output that is
    a sum of many terms can cancel to almost zero, and then its own relative
    error says nothing about the arithmetic.
    """
    assert actual.shape == expected.shape, f"{name}: shape {actual.shape} != {expected.shape}"
    assert actual.dtype == expected.dtype, f"{name}: dtype {actual.dtype} != {expected.dtype}"
    scale = max(float(np.max(np.abs(expected))), 1e-30)
    err = float(np.max(np.abs(actual.astype(np.float64) - expected.astype(np.float64))))
    assert err <= rtol * scale, f"{name}: max abs error {err:.3e} > {rtol:.0e} * {scale:.3e}"


# ----------------------------------------------------------------------------
# 1. Forward against hand-computed numbers
# ----------------------------------------------------------------------------

X_HAND = np.arange(1, 10, dtype=np.float64).reshape(1, 1, 3, 3)
#   1 2 3
#   4 5 6
#   7 8 9
W_HAND = np.array([[1, 2], [3, 4]], dtype=np.float64).reshape(1, 1, 2, 2)


@pytest.mark.parametrize("forward", [conv2d_forward_naive, conv2d_forward])
def test_forward_hand_example_valid(forward):
    # out[i, j] = 1·x[i, j] + 2·x[i, j+1] + 3·x[i+1, j] + 4·x[i+1, j+1] + 0.5
    #   (0,0): 1 + 4 + 12 + 20 = 37    (0,1): 2 + 6 + 15 + 24 = 47
    #   (1,0): 4 + 10 + 21 + 32 = 67   (1,1): 5 + 12 + 24 + 36 = 77
    # A kernel flipped as in the mathematical convolution would give
    # 4·1 + 3·2 + 2·4 + 1·5 = 23 at (0,0).
    out, _ = forward(X_HAND, W_HAND, np.array([0.5]))
    expected = np.array([[37, 47], [67, 77]], dtype=np.float64) + 0.5
    np.testing.assert_array_equal(out, expected.reshape(1, 1, 2, 2))


@pytest.mark.parametrize("forward", [conv2d_forward_naive, conv2d_forward])
def test_forward_hand_example_stride_padding(forward):
    # Padding 1 makes a 5×5 input; stride 2 with a 2×2 kernel fits
    # floor((5 − 2) / 2) + 1 = 2 windows per axis, and the last padded row and
    # column are never read.  Windows (top-left corner in padded coordinates):
    #   (0,0): [[0,0],[0,1]]  -> 4·1                  = 4
    #   (0,2): [[0,0],[2,3]]  -> 3·2 + 4·3            = 18
    #   (2,0): [[0,4],[0,7]]  -> 2·4 + 4·7            = 36
    #   (2,2): [[5,6],[8,9]]  -> 5 + 12 + 24 + 36     = 77
    out, _ = forward(X_HAND, W_HAND, None, stride=2, padding=1)
    np.testing.assert_array_equal(out, np.array([[[[4, 18], [36, 77]]]], dtype=np.float64))


@pytest.mark.parametrize("forward", [conv2d_forward_naive, conv2d_forward])
def test_forward_hand_example_channels_and_filters(forward):
    # Channel 0 is X_HAND, channel 1 is all 10.  Filter 0 = (W_HAND, ones),
    # filter 1 = (0, [[1, 0], [0, −1]]).  Channels add up; filters are separate.
    x = np.concatenate([X_HAND, np.full((1, 1, 3, 3), 10.0)], axis=1)
    w = np.zeros((2, 2, 2, 2))
    w[0, 0] = W_HAND[0, 0]
    w[0, 1] = 1.0
    w[1, 1] = [[1, 0], [0, -1]]
    out, _ = forward(x, w, np.array([0.0, 1.0]))
    expected = np.empty((1, 2, 2, 2))
    expected[0, 0] = np.array([[37, 47], [67, 77]]) + 4 * 10  # ones over a field of 10s
    expected[0, 1] = 10 - 10 + 1  # the diagonal difference of a constant, plus bias
    np.testing.assert_array_equal(out, expected)


def test_conv_output_size():
    assert conv_output_size(32, 3, 1, 1) == 32
    assert conv_output_size(32, 3, 2, 1) == 16
    assert conv_output_size(7, 2, 2, 0) == 3  # floor: the last column is dropped
    assert conv_output_size(3, 5, 1, 0) < 1
    assert conv_output_size(3, 5, 1, 1) == 1


# ----------------------------------------------------------------------------
# 2. Backward against numeric gradients
# ----------------------------------------------------------------------------

def _check_backwards_against_numeric(kernel, stride, padding, bias, N):
    x, w, b = make_inputs(kernel, bias, N=N, seed=[kernel[0], kernel[1], stride, padding, int(bias), N])
    out, cache_fast = conv2d_forward(x, w, b, stride, padding)
    _, cache_naive = conv2d_forward_naive(x, w, b, stride, padding)
    dout = np.random.default_rng(1).standard_normal(out.shape)

    # The numeric gradient uses the fast forward for speed; the naive
    # forward is held equal to it (to ~1e-12) in the tests below, and to the
    # hand-worked numbers above.
    def f():
        return conv2d_forward(x, w, b, stride, padding)[0]

    # The convolution is linear in x, in w and in b separately, so central
    # differences have no truncation error whatever the step; a step larger
    # than the default 1e-6 only shrinks the rounding error O(ε·|L| / h),
    # which otherwise reaches 1e-6 relative on the occasional gradient entry
    # that happens to be close to zero.
    h = 1e-3
    numeric = {"dx": numeric_gradient(f, x, dout, h), "dw": numeric_gradient(f, w, dout, h)}
    if bias:
        numeric["db"] = numeric_gradient(f, b, dout, h)

    for name, backward, cache in (
        ("naive", conv2d_backward_naive, cache_naive),
        ("fast", conv2d_backward, cache_fast),
    ):
        dx, dw, db = backward(dout, cache)
        analytic = {"dx": dx, "dw": dw}
        if bias:
            analytic["db"] = db
        else:
            assert db is None, f"{name}: db must be None without a bias"
        for key in numeric:
            err = relative_error(analytic[key], numeric[key])
            assert err < 1e-6, f"{name} backward, {key}: relative error {err:.2e}"


@GRID
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_backward_matches_numeric_gradient(kernel, stride, padding, bias):
    _check_backwards_against_numeric(kernel, stride, padding, bias, N=2)


@pytest.mark.parametrize("kernel, stride, padding", [((3, 3), 1, 1), ((3, 2), 2, 0), ((5, 5), 3, 2)])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_backward_matches_numeric_gradient_batch1(kernel, stride, padding, bias):
    _check_backwards_against_numeric(kernel, stride, padding, bias, N=1)


def test_numeric_check_catches_a_wrong_backward():
    # The gradient check must be able to fail: a dw with a transposed kernel
    # (a classic slip) is rejected.
    x, w, b = make_inputs((3, 3), True)
    out, cache = conv2d_forward(x, w, b, 1, 1)
    dout = np.random.default_rng(1).standard_normal(out.shape)
    _, dw, _ = conv2d_backward(dout, cache)
    numeric = numeric_gradient(lambda: conv2d_forward(x, w, b, 1, 1)[0], w, dout)
    assert relative_error(dw.transpose(0, 1, 3, 2), numeric) > 1e-2


# ----------------------------------------------------------------------------
# 3. Fast equals naive
# ----------------------------------------------------------------------------

@GRID
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-12), (np.float32, 1e-5)], ids=["f64", "f32"])
def test_fast_equals_naive(kernel, stride, padding, bias, dtype, rtol):
    x, w, b = make_inputs(kernel, bias, dtype=dtype, seed=3)
    out_n, cache_n = conv2d_forward_naive(x, w, b, stride, padding)
    out_f, cache_f = conv2d_forward(x, w, b, stride, padding)
    assert out_f.dtype == dtype and out_n.dtype == dtype
    assert out_f.shape == (
        x.shape[0],
        w.shape[0],
        conv_output_size(H, kernel[0], stride, padding),
        conv_output_size(W, kernel[1], stride, padding),
    )
    assert_close_scaled(out_f, out_n, rtol, "out")

    dout = np.random.default_rng(4).standard_normal(out_n.shape).astype(dtype)
    grads_n = conv2d_backward_naive(dout, cache_n)
    grads_f = conv2d_backward(dout, cache_f)
    for name, g_f, g_n in zip(("dx", "dw", "db"), grads_f, grads_n):
        if name == "db" and not bias:
            assert g_f is None and g_n is None
            continue
        assert_close_scaled(g_f, g_n, rtol, name)


def test_fast_accepts_noncontiguous_input():
    x, w, b = make_inputs((3, 3), True, hw=(5, 7))
    x_t = x.transpose(0, 1, 3, 2)  # a (2, 2, 7, 5) view with swapped strides
    assert not x_t.flags.c_contiguous
    out_f, cache_f = conv2d_forward(x_t, w, b, 2, 1)
    out_n, cache_n = conv2d_forward_naive(np.ascontiguousarray(x_t), w, b, 2, 1)
    assert_close_scaled(out_f, out_n, 1e-12, "out")
    dout = np.ones_like(out_f)[..., ::-1]  # non-contiguous dout as well
    for g_f, g_n in zip(conv2d_backward(dout, cache_f), conv2d_backward_naive(dout, cache_n)):
        assert_close_scaled(g_f, g_n, 1e-12, "grad")


# ----------------------------------------------------------------------------
# 4. Kernels
# ----------------------------------------------------------------------------

@pytest.fixture(params=["serial", "parallel"])
def launch_path(request, monkeypatch):
    """Run a kernel test twice: small inputs normally take the one-thread
    path; a zero threshold forces the prange path on the same inputs."""
    if request.param == "parallel":
        monkeypatch.setattr(im2col_module, "_PARALLEL_MIN_ENTRIES", 0)
    return request.param


@GRID
def test_im2col_matches_naive(kernel, stride, padding, launch_path):
    x = np.random.default_rng(5).standard_normal((2, 3, H, W))
    cols = im2col(x, *kernel, stride, padding)
    h_out = conv_output_size(H, kernel[0], stride, padding)
    w_out = conv_output_size(W, kernel[1], stride, padding)
    assert cols.shape == (2, 3 * kernel[0] * kernel[1], h_out * w_out)
    # A gather copies values, so the two must agree bit for bit.
    np.testing.assert_array_equal(cols, im2col_naive(x, *kernel, stride, padding))


def test_fast_equals_naive_large_enough_for_threads():
    # Big enough to cross the kernels' threshold for going parallel.
    x, w, b = make_inputs((3, 3), True, N=4, C=8, F=4, seed=8, hw=(16, 16))
    assert 4 * 8 * 9 * 16 * 16 >= im2col_module._PARALLEL_MIN_ENTRIES
    out_f, cache_f = conv2d_forward(x, w, b, 1, 1)
    out_n, cache_n = conv2d_forward_naive(x, w, b, 1, 1)
    assert_close_scaled(out_f, out_n, 1e-12, "out")
    dout = np.random.default_rng(9).standard_normal(out_f.shape)
    for name, g_f, g_n in zip(("dx", "dw", "db"), conv2d_backward(dout, cache_f),
                              conv2d_backward_naive(dout, cache_n)):
        assert_close_scaled(g_f, g_n, 1e-12, name)


def test_launch_uses_one_thread_only_for_small_work():
    import numba

    seen = []
    record = lambda: seen.append(numba.get_num_threads())  # noqa: E731
    before = numba.get_num_threads()
    big = im2col_module._PARALLEL_MIN_ENTRIES
    im2col_module._launch(record, big - 1, 4)
    im2col_module._launch(record, big, 1)  # a single image: nothing to split
    im2col_module._launch(record, big, 4)
    assert seen == [1, 1, before]
    assert numba.get_num_threads() == before  # restored


def test_im2col_layout_by_hand():
    # x = X_HAND, 2×2 kernel, stride 1, no padding: column l = i·2 + j holds
    # the window at (i, j) read row by row.
    cols = im2col(X_HAND, 2, 2, 1, 0)
    expected = np.array([[1, 2, 4, 5], [2, 3, 5, 6], [4, 5, 7, 8], [5, 6, 8, 9]], dtype=np.float64)
    np.testing.assert_array_equal(cols[0], expected)


@GRID
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_col2im_matches_naive(kernel, stride, padding, dtype, launch_path):
    x_shape = (2, 3, H, W)
    h_out = conv_output_size(H, kernel[0], stride, padding)
    w_out = conv_output_size(W, kernel[1], stride, padding)
    rng = np.random.default_rng(6)
    cols = rng.standard_normal((2, 3 * kernel[0] * kernel[1], h_out * w_out)).astype(dtype)
    dx = col2im(cols, x_shape, *kernel, stride, padding)
    assert dx.shape == x_shape and dx.dtype == dtype
    assert_close_scaled(dx, col2im_naive(cols, x_shape, *kernel, stride, padding),
                        1e-12 if dtype == np.float64 else 1e-6, "dx")


@GRID
def test_col2im_is_adjoint_of_im2col(kernel, stride, padding, launch_path):
    # ⟨im2col(x), c⟩ = ⟨x, col2im(c)⟩ for all x, c: the defining property
    # that makes col2im the right backward for im2col.
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 3, H, W))
    h_out = conv_output_size(H, kernel[0], stride, padding)
    w_out = conv_output_size(W, kernel[1], stride, padding)
    c = rng.standard_normal((2, 3 * kernel[0] * kernel[1], h_out * w_out))
    lhs = float(np.sum(im2col(x, *kernel, stride, padding) * c))
    rhs = float(np.sum(x * col2im(c, x.shape, *kernel, stride, padding)))
    assert abs(lhs - rhs) <= 1e-12 * (abs(lhs) + abs(rhs) + np.sqrt(c.size))


def test_col2im_overlaps_add_up():
    # All-ones columns: each input pixel receives the number of windows that
    # cover it.  3×3 input, 2×2 kernel, stride 1: corners 1, edges 2, centre 4.
    dx = col2im(np.ones((1, 4, 4)), (1, 1, 3, 3), 2, 2, 1, 0)
    np.testing.assert_array_equal(dx[0, 0], [[1, 2, 1], [2, 4, 2], [1, 2, 1]])


# ----------------------------------------------------------------------------
# 5. Bad input
# ----------------------------------------------------------------------------

def assert_message_has(excinfo, *parts):
    msg = str(excinfo.value)
    for part in parts:
        assert part in msg, f"{part!r} missing from error message: {msg!r}"


FORWARDS = pytest.mark.parametrize("forward", [conv2d_forward_naive, conv2d_forward])


@FORWARDS
def test_bad_ndim(forward):
    w = np.zeros((2, 3, 3, 3), np.float32)
    with pytest.raises(ValueError, match="conv2d: x") as e:
        forward(np.zeros((3, 5, 5), np.float32), w)
    assert_message_has(e, "4-D", "(3, 5, 5)")
    with pytest.raises(ValueError, match="conv2d: w") as e:
        forward(np.zeros((1, 3, 5, 5), np.float32), np.zeros((3, 3, 3), np.float32))
    assert_message_has(e, "4-D", "(3, 3, 3)")


@FORWARDS
def test_channel_mismatch(forward):
    with pytest.raises(ValueError, match="conv2d: x") as e:
        forward(np.zeros((1, 3, 5, 5), np.float32), np.zeros((2, 4, 3, 3), np.float32))
    assert_message_has(e, "(1, 3, 5, 5)", "(2, 4, 3, 3)", "channels")


@FORWARDS
def test_dtype_mismatch(forward):
    with pytest.raises(TypeError, match="conv2d: x and w") as e:
        forward(np.zeros((1, 3, 5, 5), np.float32), np.zeros((2, 3, 3, 3), np.float64))
    assert_message_has(e, "float32", "float64")
    with pytest.raises(TypeError, match="conv2d: x") as e:
        forward(np.zeros((1, 3, 5, 5), np.int64), np.zeros((2, 3, 3, 3), np.int64))
    assert_message_has(e, "int64")
    with pytest.raises(TypeError, match="conv2d: b") as e:
        forward(np.zeros((1, 3, 5, 5)), np.zeros((2, 3, 3, 3)), np.zeros(2, np.float32))
    assert_message_has(e, "float32", "float64")


@FORWARDS
def test_kernel_larger_than_padded_input(forward):
    x = np.zeros((1, 1, 3, 3), np.float32)
    w = np.zeros((1, 1, 5, 5), np.float32)
    with pytest.raises(ValueError, match="conv2d: kernel") as e:
        forward(x, w)
    assert_message_has(e, "(5, 5)", "(3, 3)", "(1, 1, 3, 3)")
    out, _ = forward(x, w, padding=1)  # padded to 5×5 it fits exactly
    assert out.shape == (1, 1, 1, 1)


@FORWARDS
def test_bad_bias_stride_padding(forward):
    x = np.zeros((1, 3, 5, 5), np.float32)
    w = np.zeros((2, 3, 3, 3), np.float32)
    with pytest.raises(ValueError, match="conv2d: b") as e:
        forward(x, w, np.zeros(3, np.float32))
    assert_message_has(e, "(2,)", "(3,)")
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="conv2d: stride"):
            forward(x, w, stride=bad)
    for bad in (-1, 0.5):
        with pytest.raises(ValueError, match="conv2d: padding"):
            forward(x, w, padding=bad)


@pytest.mark.parametrize("forward, backward", [(conv2d_forward_naive, conv2d_backward_naive),
                                               (conv2d_forward, conv2d_backward)])
def test_backward_rejects_wrong_dout(forward, backward):
    out, cache = forward(np.zeros((1, 3, 5, 5)), np.zeros((2, 3, 3, 3)))
    with pytest.raises(ValueError, match="dout") as e:
        backward(np.zeros((1, 2, 5, 5)), cache)
    assert_message_has(e, str(out.shape), "(1, 2, 5, 5)")
    with pytest.raises(TypeError, match="dout"):
        backward(np.zeros(out.shape, np.float32), cache)


# ----------------------------------------------------------------------------
# 6. With the JIT switched off
# ----------------------------------------------------------------------------

_NOJIT_SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    import numba
    from tqref.functional.conv import conv2d_forward, conv2d_backward
    from tqref.kernels import im2col as k

    assert numba.config.DISABLE_JIT, "NUMBA_DISABLE_JIT was not honoured"
    # With the JIT off, @njit returns the Python function itself.
    assert not hasattr(k._im2col_kernel, "py_func"), type(k._im2col_kernel)
    assert not hasattr(k._col2im_kernel, "py_func"), type(k._col2im_kernel)

    rng = np.random.default_rng(11)
    x = rng.standard_normal((2, 3, 7, 5))
    w = rng.standard_normal((4, 3, 3, 2))
    b = rng.standard_normal(4)
    out, cache = conv2d_forward(x, w, b, 2, 1)
    dout = rng.standard_normal(out.shape)
    dx, dw, db = conv2d_backward(dout, cache)
    np.savez(sys.argv[1], out=out, dx=dx, dw=dw, db=db)
    """
)


def test_runs_with_jit_disabled(tmp_path):
    nojit = run_without_jit(_NOJIT_SCRIPT, tmp_path)

    # The same computation here, jitted (unless the whole session runs with
    # the JIT off), and checked against the naive pair as well.
    rng = np.random.default_rng(11)
    x = rng.standard_normal((2, 3, 7, 5))
    w = rng.standard_normal((4, 3, 3, 2))
    b = rng.standard_normal(4)
    out, cache = conv2d_forward(x, w, b, 2, 1)
    dout = rng.standard_normal(out.shape)
    dx, dw, db = conv2d_backward(dout, cache)
    out_n, cache_n = conv2d_forward_naive(x, w, b, 2, 1)
    dx_n, dw_n, db_n = conv2d_backward_naive(dout, cache_n)
    for name, jit, ref in (("out", out, out_n), ("dx", dx, dx_n), ("dw", dw, dw_n), ("db", db, db_n)):
        assert_close_scaled(nojit[name], jit, 1e-12, f"{name} (no JIT vs JIT)")
        assert_close_scaled(nojit[name], ref, 1e-12, f"{name} (no JIT vs naive)")
