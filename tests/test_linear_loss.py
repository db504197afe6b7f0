"""Linear layer and softmax cross-entropy."""

import math

import numpy as np
import pytest

from tqref.functional.linear import linear_backward, linear_backward_naive, linear_forward, linear_forward_naive
from tqref.functional.loss import softmax_cross_entropy, softmax_cross_entropy_naive
from tqref.gradcheck import check_gradient

LINEAR_VERSIONS = [
    pytest.param((linear_forward, linear_backward), id="fast"),
    pytest.param((linear_forward_naive, linear_backward_naive), id="naive"),
]
LOSSES = [pytest.param(softmax_cross_entropy, id="fast"), pytest.param(softmax_cross_entropy_naive, id="naive")]


def linear_inputs(N, D, F, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(N, D)).astype(dtype), rng.normal(size=(F, D)).astype(dtype),
            rng.normal(size=F).astype(dtype), rng.normal(size=(N, F)).astype(dtype))


# ----------------------------------------------------------------------------
# linear
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("version", LINEAR_VERSIONS)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("N, D, F", [(1, 1, 1), (1, 5, 3), (3, 7, 4), (4, 2, 5)])
def test_linear_gradients_match_numeric(version, bias, N, D, F):
    fwd, bwd = version
    x, w, b, dout = linear_inputs(N, D, F)
    b = b if bias else None
    _, cache = fwd(x, w, b)
    dx, dw, db = bwd(dout, cache)
    f = lambda: fwd(x, w, b)[0]  # noqa: E731
    check_gradient(f, x, dx, dout, name="x")
    check_gradient(f, w, dw, dout, name="w")
    if bias:
        check_gradient(f, b, db, dout, name="b")
    else:
        assert db is None


@pytest.mark.parametrize("version", LINEAR_VERSIONS)
def test_linear_hand_example(version):
    fwd, bwd = version
    x = np.array([[1.0, 2.0]])
    w = np.array([[3.0, 4.0], [5.0, 6.0]])
    b = np.array([1.0, -1.0])
    out, cache = fwd(x, w, b)
    np.testing.assert_array_equal(out, [[1 * 3 + 2 * 4 + 1, 1 * 5 + 2 * 6 - 1]])
    dx, dw, db = bwd(np.array([[1.0, 10.0]]), cache)
    np.testing.assert_array_equal(dx, [[3 + 50, 4 + 60]])
    np.testing.assert_array_equal(dw, [[1, 2], [10, 20]])
    np.testing.assert_array_equal(db, [1, 10])


@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-12), (np.float32, 1e-5)], ids=["f64", "f32"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_linear_fast_equals_naive(dtype, rtol, bias):
    x, w, b, dout = linear_inputs(5, 9, 4, dtype)
    b = b if bias else None
    out_f, cache_f = linear_forward(x, w, b)
    out_n, cache_n = linear_forward_naive(x, w, b)
    grads_f = linear_backward(dout, cache_f)
    grads_n = linear_backward_naive(dout, cache_n)
    for name, a, c in zip(("out", "dx", "dw", "db"), (out_f,) + grads_f, (out_n,) + grads_n):
        if name == "db" and not bias:
            assert a is None and c is None
            continue
        assert a.dtype == dtype and c.dtype == dtype, name
        np.testing.assert_allclose(a, c, rtol=rtol, atol=rtol * np.abs(c).max(), err_msg=name)


@pytest.mark.parametrize("fwd", [linear_forward, linear_forward_naive], ids=["fast", "naive"])
def test_linear_bad_inputs(fwd):
    name = fwd.__name__
    x = np.zeros((2, 3))
    with pytest.raises(ValueError, match=rf"{name}: w: expected shape \(F, 3\).*got \(4, 5\)"):
        fwd(x, np.zeros((4, 5)))
    with pytest.raises(ValueError, match=rf"{name}: b: expected shape \(4,\).*got \(3,\)"):
        fwd(x, np.zeros((4, 3)), np.zeros(3))
    with pytest.raises(ValueError, match=rf"{name}: x: expected a 2-D array, got 1-D"):
        fwd(np.zeros(3), np.zeros((4, 3)))
    with pytest.raises(TypeError, match=rf"{name}: w: expected dtype float64.*got float32"):
        fwd(x, np.zeros((4, 3), dtype=np.float32))
    with pytest.raises(TypeError, match=rf"{name}: b: expected dtype float64.*got float32"):
        fwd(x, np.zeros((4, 3)), np.zeros(4, dtype=np.float32))


# ----------------------------------------------------------------------------
# softmax cross-entropy
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("loss_fn", LOSSES)
def test_loss_hand_example(loss_fn):
    logits = np.array([[1.0, 2.0, 3.0], [1.0, 1.0, 1.0]])
    labels = np.array([2, 0])
    loss, dlogits = loss_fn(logits, labels)
    # Row 0: −log(e³/(e + e² + e³)) = log(1 + e⁻¹ + e⁻²); row 1: −log(1/3) = log 3.
    s = 1 + math.exp(-1) + math.exp(-2)
    assert isinstance(loss, float)
    assert loss == pytest.approx((math.log(s) + math.log(3)) / 2, rel=1e-14)
    assert loss == pytest.approx(0.7531091265562451, rel=1e-14)
    p0 = np.array([math.exp(-2), math.exp(-1), 1.0]) / s
    expected = np.array([[p0[0], p0[1], p0[2] - 1], [1 / 3 - 1, 1 / 3, 1 / 3]]) / 2
    np.testing.assert_allclose(dlogits, expected, rtol=1e-14, atol=1e-16)


@pytest.mark.parametrize("loss_fn", LOSSES)
@pytest.mark.parametrize("N, K", [(1, 1), (1, 4), (3, 2), (5, 10)])
def test_loss_gradient_matches_numeric(loss_fn, N, K):
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 1, (N, K))  # no tiny probabilities: rounding would dominate
    labels = rng.integers(0, K, N)
    _, dlogits = loss_fn(logits, labels)
    check_gradient(lambda: loss_fn(logits, labels)[0], logits, dlogits, name="logits")


@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-12), (np.float32, 1e-5)], ids=["f64", "f32"])
def test_loss_fast_equals_naive(dtype, rtol):
    rng = np.random.default_rng(2)
    logits = rng.normal(0, 3, (6, 10)).astype(dtype)
    labels = rng.integers(0, 10, 6)
    loss_f, d_f = softmax_cross_entropy(logits, labels)
    loss_n, d_n = softmax_cross_entropy_naive(logits, labels)
    assert isinstance(loss_f, float) and isinstance(loss_n, float)
    assert loss_f == pytest.approx(loss_n, rel=rtol)
    assert d_f.dtype == dtype and d_n.dtype == dtype
    np.testing.assert_allclose(d_f, d_n, rtol=rtol, atol=rtol * np.abs(d_n).max())


@pytest.mark.parametrize("loss_fn", LOSSES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_loss_is_stable_for_huge_logits(loss_fn, dtype):
    logits = np.array([[1e4, 0.0, -1e4], [1e4, 1e4 + 1, 1e4 - 1]], dtype=dtype)
    labels = np.array([0, 1])
    loss, dlogits = loss_fn(logits, labels)
    assert math.isfinite(loss)
    assert np.all(np.isfinite(dlogits))
    # Row 0 is certain (loss 0); row 1 is the hand example's row 0 shifted by 1e4.
    expected = (0.0 + math.log(1 + math.exp(-1) + math.exp(-2))) / 2
    assert loss == pytest.approx(expected, rel=1e-6)
    np.testing.assert_allclose(dlogits[0], [0, 0, 0], atol=1e-12)
    np.testing.assert_allclose(dlogits.sum(axis=1), 0, atol=1e-6)


@pytest.mark.parametrize("loss_fn", LOSSES)
def test_loss_bad_labels(loss_fn):
    name = loss_fn.__name__
    logits = np.zeros((3, 4))
    with pytest.raises(ValueError, match=rf"{name}: labels: expected an integer array.*got dtype float64"):
        loss_fn(logits, np.array([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match=rf"{name}: labels: expected class indices in \[0, 4\).*labels\[1\] = 4"):
        loss_fn(logits, np.array([0, 4, 1]))
    with pytest.raises(ValueError, match=rf"{name}: labels: expected class indices in \[0, 4\).*labels\[2\] = -1"):
        loss_fn(logits, np.array([0, 1, -1]))
    with pytest.raises(ValueError, match=rf"{name}: labels: expected shape \(3,\).*got \(2,\)"):
        loss_fn(logits, np.array([0, 1]))
    with pytest.raises(ValueError, match=rf"{name}: labels: expected shape \(3,\).*got \(3, 1\)"):
        loss_fn(logits, np.array([[0], [1], [2]]))
    with pytest.raises(ValueError, match=rf"{name}: logits: expected a 2-D array, got 1-D"):
        loss_fn(np.zeros(4), np.array([0]))
    # Unsigned and narrow integer labels are fine.
    loss, _ = loss_fn(logits, np.array([0, 1, 3], dtype=np.uint8))
    assert loss == pytest.approx(math.log(4))
