"""Global average pooling, 2×2 max pooling, option-A shortcut and residual add."""

import numpy as np
import pytest

from tqref.functional.pooling import (
    global_avg_pool_backward,
    global_avg_pool_backward_naive,
    global_avg_pool_forward,
    global_avg_pool_forward_naive,
    max_pool2x2_backward,
    max_pool2x2_backward_naive,
    max_pool2x2_forward,
    max_pool2x2_forward_naive,
)
from tqref.functional.shortcut import (
    add_backward,
    add_backward_naive,
    add_forward,
    add_forward_naive,
    option_a_shortcut_backward,
    option_a_shortcut_backward_naive,
    option_a_shortcut_forward,
    option_a_shortcut_forward_naive,
)
from tqref.gradcheck import check_gradient

GAP = [pytest.param((global_avg_pool_forward, global_avg_pool_backward), id="fast"),
       pytest.param((global_avg_pool_forward_naive, global_avg_pool_backward_naive), id="naive")]
MAXPOOL = [pytest.param((max_pool2x2_forward, max_pool2x2_backward), id="fast"),
           pytest.param((max_pool2x2_forward_naive, max_pool2x2_backward_naive), id="naive")]
SHORTCUT = [pytest.param((option_a_shortcut_forward, option_a_shortcut_backward), id="fast"),
            pytest.param((option_a_shortcut_forward_naive, option_a_shortcut_backward_naive), id="naive")]
ADD = [pytest.param((add_forward, add_backward), id="fast"),
       pytest.param((add_forward_naive, add_backward_naive), id="naive")]


def rand(shape, dtype=np.float64, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype(dtype)


def distinct(shape, seed=0):
    """Values 0.1 apart in random order: no window has a near-tie, so the
    max is smooth within the numeric-gradient step."""
    size = int(np.prod(shape))
    return (np.random.default_rng(seed).permutation(size).reshape(shape) - size / 2) * 0.1


# ----------------------------------------------------------------------------
# global average pooling
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("version", GAP)
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 3, 5, 7), (1, 2, 4, 4), (3, 1, 1, 3)])
def test_gap_gradient_matches_numeric(version, shape):
    fwd, bwd = version
    x = rand(shape)
    dout = rand(shape[:2], seed=1)
    out, cache = fwd(x)
    assert out.shape == shape[:2]
    dx = bwd(dout, cache)
    check_gradient(lambda: fwd(x)[0], x, dx, dout, name="x")


@pytest.mark.parametrize("version", GAP)
def test_gap_hand_example(version):
    fwd, bwd = version
    x = np.arange(12.0).reshape(1, 2, 2, 3)
    out, cache = fwd(x)
    np.testing.assert_array_equal(out, [[15 / 6, 51 / 6]])
    dx = bwd(np.array([[6.0, 12.0]]), cache)
    np.testing.assert_array_equal(dx, np.stack([np.ones((2, 3)), 2 * np.ones((2, 3))])[None])
    dx[0, 0, 0, 0] = 5.0  # a real, writeable array


@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-12), (np.float32, 1e-5)], ids=["f64", "f32"])
def test_gap_fast_equals_naive(dtype, rtol):
    x = rand((2, 3, 5, 3), dtype)
    dout = rand((2, 3), dtype, seed=1)
    out_f, cache_f = global_avg_pool_forward(x)
    out_n, cache_n = global_avg_pool_forward_naive(x)
    dx_f = global_avg_pool_backward(dout, cache_f)
    dx_n = global_avg_pool_backward_naive(dout, cache_n)
    for a, b in ((out_f, out_n), (dx_f, dx_n)):
        assert a.dtype == dtype and b.dtype == dtype
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * np.abs(b).max())


@pytest.mark.parametrize("fwd", [global_avg_pool_forward, global_avg_pool_forward_naive], ids=["fast", "naive"])
def test_gap_bad_inputs(fwd):
    with pytest.raises(ValueError, match=rf"{fwd.__name__}: x: expected a 4-D array, got 2-D"):
        fwd(np.zeros((2, 3)))
    with pytest.raises(TypeError, match=rf"{fwd.__name__}: x: expected dtype float32 or float64, got int64"):
        fwd(np.zeros((1, 1, 2, 2), dtype=np.int64))
    with pytest.raises(ValueError, match=rf"{fwd.__name__}: x: expected H ≥ 1 and W ≥ 1, got shape \(1, 1, 0, 2\)"):
        fwd(np.zeros((1, 1, 0, 2)))


# ----------------------------------------------------------------------------
# 2×2 max pooling
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("version", MAXPOOL)
@pytest.mark.parametrize("shape", [(2, 3, 4, 4), (1, 2, 5, 7), (1, 1, 2, 2), (2, 1, 3, 2), (1, 2, 6, 3)])
def test_maxpool_gradient_matches_numeric(version, shape):
    fwd, bwd = version
    x = distinct(shape)
    out, cache = fwd(x)
    assert out.shape == (shape[0], shape[1], shape[2] // 2, shape[3] // 2)
    dout = rand(out.shape, seed=1)
    dx = bwd(dout, cache)
    check_gradient(lambda: fwd(x)[0], x, dx, dout, name="x")


@pytest.mark.parametrize("version", MAXPOOL)
def test_maxpool_hand_example(version):
    fwd, bwd = version
    x = np.array([[1, 5, 0, 2],
                  [3, 4, 7, 1],
                  [9, 0, 2, 2],
                  [8, 9, 2, 2]], dtype=np.float64)[None, None]
    out, cache = fwd(x)
    np.testing.assert_array_equal(out, [[[[5, 7], [9, 2]]]])
    dx = bwd(np.array([[[[10.0, 20.0], [30.0, 40.0]]]]), cache)
    # Ties: 9 at (0,0) and (1,1) of its window -> the first; all four 2s -> (0,0).
    expected = np.array([[0, 10, 0, 0],
                         [0, 0, 20, 0],
                         [30, 0, 40, 0],
                         [0, 0, 0, 0]], dtype=np.float64)[None, None]
    np.testing.assert_array_equal(dx, expected)


@pytest.mark.parametrize("version", MAXPOOL)
@pytest.mark.parametrize("first", [0, 1, 2, 3])
def test_maxpool_ties_go_to_first_maximum(version, first):
    fwd, bwd = version
    # Positions first..3 all hold the maximum; the gradient must go to `first`.
    win = np.zeros(4)
    win[first:] = 1.0
    x = win.reshape(1, 1, 2, 2)
    _, cache = fwd(x)
    dx = bwd(np.ones((1, 1, 1, 1)), cache)
    expected = np.zeros(4)
    expected[first] = 1.0
    np.testing.assert_array_equal(dx.reshape(4), expected)


@pytest.mark.parametrize("version", MAXPOOL)
def test_maxpool_odd_sizes_ignore_trailing_row_and_column(version):
    fwd, bwd = version
    x = np.zeros((1, 1, 3, 5))
    x[0, 0, 2, :] = 100.0  # the trailing row: out of every window
    x[0, 0, :, 4] = 100.0  # the trailing column
    x[0, 0, 1, 1] = 1.0
    x[0, 0, 0, 2] = 2.0
    out, cache = fwd(x)
    np.testing.assert_array_equal(out, [[[[1.0, 2.0]]]])
    dx = bwd(np.array([[[[3.0, 4.0]]]]), cache)
    expected = np.zeros((1, 1, 3, 5))
    expected[0, 0, 1, 1] = 3.0
    expected[0, 0, 0, 2] = 4.0
    np.testing.assert_array_equal(dx, expected)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("shape", [(2, 3, 4, 6), (1, 2, 5, 3)])
def test_maxpool_fast_equals_naive(dtype, shape):
    # Small integers: many ties, so the tie rule is compared too.  Selection
    # does no arithmetic, so the results are equal bit for bit.
    rng = np.random.default_rng(3)
    x = rng.integers(0, 3, shape).astype(dtype)
    out_f, cache_f = max_pool2x2_forward(x)
    out_n, cache_n = max_pool2x2_forward_naive(x)
    dout = rand(out_f.shape, dtype, seed=4)
    dx_f = max_pool2x2_backward(dout, cache_f)
    dx_n = max_pool2x2_backward_naive(dout, cache_n)
    for a, b in ((out_f, out_n), (cache_f[0], cache_n[0]), (dx_f, dx_n)):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    assert out_f.dtype == dtype and dx_f.dtype == dtype


@pytest.mark.parametrize("fwd", [max_pool2x2_forward, max_pool2x2_forward_naive], ids=["fast", "naive"])
def test_maxpool_bad_inputs(fwd):
    with pytest.raises(ValueError, match=rf"{fwd.__name__}: x: expected a 4-D array, got 3-D"):
        fwd(np.zeros((3, 4, 4)))
    with pytest.raises(ValueError, match=rf"{fwd.__name__}: x: expected H ≥ 2 and W ≥ 2.*got shape \(1, 1, 1, 4\)"):
        fwd(np.zeros((1, 1, 1, 4)))


# ----------------------------------------------------------------------------
# option-A shortcut
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("version", SHORTCUT)
def test_shortcut_hand_example(version):
    fwd, bwd = version
    x = np.arange(32.0).reshape(1, 2, 4, 4)
    out, cache = fwd(x, 4)
    zeros = [[0, 0], [0, 0]]
    expected = np.array([[zeros, [[0, 2], [8, 10]], [[16, 18], [24, 26]], zeros]], dtype=np.float64)
    np.testing.assert_array_equal(out, expected)

    dout = np.arange(1.0, 17.0).reshape(1, 4, 2, 2)
    dx = bwd(dout, cache)
    expected_dx = np.zeros((1, 2, 4, 4))
    expected_dx[0, 0, ::2, ::2] = [[5, 6], [7, 8]]      # out channel 1
    expected_dx[0, 1, ::2, ::2] = [[9, 10], [11, 12]]   # out channel 2
    np.testing.assert_array_equal(dx, expected_dx)


def pytorch_option_a(x, planes):
    """The reference: F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, planes//4, planes//4))."""
    sub = x[:, :, ::2, ::2]
    return np.pad(sub, ((0, 0), (planes // 4, planes // 4), (0, 0), (0, 0)))


@pytest.mark.parametrize("version", SHORTCUT)
@pytest.mark.parametrize("shape", [(2, 16, 32, 32), (1, 32, 16, 16), (2, 4, 5, 7)])
def test_shortcut_matches_pytorch_cifar_resnet(version, shape):
    fwd, _ = version
    x = rand(shape)
    planes = 2 * shape[1]
    out, _ = fwd(x, planes)
    np.testing.assert_array_equal(out, pytorch_option_a(x, planes))
    assert out.shape == (shape[0], planes, (shape[2] + 1) // 2, (shape[3] + 1) // 2)


@pytest.mark.parametrize("version", SHORTCUT)
@pytest.mark.parametrize("C, out_channels, before", [(2, 2, 0), (2, 3, 0), (2, 5, 1), (3, 8, 2)])
def test_shortcut_padding_split(version, C, out_channels, before):
    fwd, _ = version
    x = rand((1, C, 3, 3)) + 10.0  # never zero
    out, _ = fwd(x, out_channels)
    assert out.shape == (1, out_channels, 2, 2)
    nonzero = [c for c in range(out_channels) if np.any(out[0, c] != 0)]
    assert nonzero == list(range(before, before + C))


@pytest.mark.parametrize("version", SHORTCUT)
@pytest.mark.parametrize("shape, out_channels", [((1, 2, 4, 4), 4), ((2, 3, 5, 3), 7), ((1, 1, 1, 1), 2),
                                                 ((2, 2, 3, 6), 2)])
def test_shortcut_gradient_matches_numeric(version, shape, out_channels):
    fwd, bwd = version
    x = rand(shape)
    out, cache = fwd(x, out_channels)
    dout = rand(out.shape, seed=1)
    dx = bwd(dout, cache)
    check_gradient(lambda: fwd(x, out_channels)[0], x, dx, dout, name="x")
    # Dropped pixels get exactly zero.
    mask = np.ones(shape, dtype=bool)
    mask[:, :, ::2, ::2] = False
    assert np.all(dx[mask] == 0)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_shortcut_fast_equals_naive(dtype):
    x = rand((2, 3, 5, 4), dtype)
    out_f, cache_f = option_a_shortcut_forward(x, 8)
    out_n, cache_n = option_a_shortcut_forward_naive(x, 8)
    dout = rand(out_f.shape, dtype, seed=1)
    dx_f = option_a_shortcut_backward(dout, cache_f)
    dx_n = option_a_shortcut_backward_naive(dout, cache_n)
    for a, b in ((out_f, out_n), (dx_f, dx_n)):
        assert a.dtype == dtype and b.dtype == dtype
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("fwd", [option_a_shortcut_forward, option_a_shortcut_forward_naive], ids=["fast", "naive"])
def test_shortcut_bad_inputs(fwd):
    name = fwd.__name__
    with pytest.raises(ValueError, match=rf"{name}: out_channels: expected at least the 4 channels.*got 2"):
        fwd(np.zeros((1, 4, 2, 2)), 2)
    with pytest.raises(ValueError, match=rf"{name}: out_channels: expected a positive integer, got 8.0"):
        fwd(np.zeros((1, 4, 2, 2)), 8.0)
    with pytest.raises(ValueError, match=rf"{name}: x: expected a 4-D array, got 2-D"):
        fwd(np.zeros((4, 2)), 8)


# ----------------------------------------------------------------------------
# residual add
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("version", ADD)
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 3, 5, 4), (3, 7)])
def test_add_gradient_matches_numeric(version, shape):
    fwd, bwd = version
    a, b, dout = rand(shape), rand(shape, seed=1), rand(shape, seed=2)
    out, cache = fwd(a, b)
    np.testing.assert_array_equal(out, a + b)
    da, db = bwd(dout, cache)
    f = lambda: fwd(a, b)[0]  # noqa: E731
    check_gradient(f, a, da, dout, name="a")
    check_gradient(f, b, db, dout, name="b")


@pytest.mark.parametrize("version", ADD)
def test_add_gradients_are_independent_arrays(version):
    fwd, bwd = version
    a = rand((2, 3))
    _, cache = fwd(a, a.copy())
    dout = rand((2, 3), seed=1)
    da, db = bwd(dout, cache)
    da += 1.0
    np.testing.assert_array_equal(db, dout)
    assert not np.shares_memory(da, db)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_add_fast_equals_naive(dtype):
    a, b, dout = rand((2, 3, 4, 5), dtype), rand((2, 3, 4, 5), dtype, 1), rand((2, 3, 4, 5), dtype, 2)
    out_f, cache_f = add_forward(a, b)
    out_n, cache_n = add_forward_naive(a, b)
    np.testing.assert_array_equal(out_f, out_n)
    for g_f, g_n in zip(add_backward(dout, cache_f), add_backward_naive(dout, cache_n)):
        assert g_f.dtype == dtype and g_n.dtype == dtype
        np.testing.assert_array_equal(g_f, g_n)
    assert out_f.dtype == dtype and out_n.dtype == dtype


@pytest.mark.parametrize("version", ADD)
def test_add_bad_inputs(version):
    fwd, bwd = version
    name = fwd.__name__
    with pytest.raises(ValueError, match=rf"{name}: b: expected the shape of a \(2, 4, 8, 8\), got \(2, 4, 4, 4\)"):
        fwd(np.zeros((2, 4, 8, 8)), np.zeros((2, 4, 4, 4)))
    with pytest.raises(TypeError, match=rf"{name}: b: expected the dtype of a \(float64\), got float32"):
        fwd(np.zeros((2, 3)), np.zeros((2, 3), dtype=np.float32))
    _, cache = fwd(np.zeros((2, 3)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match=rf"{bwd.__name__}: dout: expected the shape of the forward output \(2, 3\)"):
        bwd(np.zeros((3, 2)), cache)
