"""ReLU: gradient against numeric differences, naive == fast."""

import numpy as np
import pytest

from tqref.functional.activations import relu_backward, relu_backward_naive, relu_forward, relu_forward_naive
from tqref.gradcheck import check_gradient

VERSIONS = [pytest.param((relu_forward, relu_backward), id="fast"),
            pytest.param((relu_forward_naive, relu_backward_naive), id="naive")]


def away_from_zero(shape, seed=0):
    """Random signs and magnitudes in [0.1, 1]: the kink at 0 stays far
    outside the numeric-gradient step."""
    rng = np.random.default_rng(seed)
    return rng.choice([-1.0, 1.0], shape) * rng.uniform(0.1, 1.0, shape)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("shape", [(1,), (3, 4), (2, 3, 5, 5), (1, 1, 1, 1)])
def test_relu_gradient_matches_numeric(version, shape):
    fwd, bwd = version
    x = away_from_zero(shape)
    dout = np.random.default_rng(1).normal(size=shape)
    out, cache = fwd(x)
    np.testing.assert_array_equal(out, np.where(x > 0, x, 0))
    dx = bwd(dout, cache)
    check_gradient(lambda: fwd(x)[0], x, dx, dout, name="x")


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_relu_fast_equals_naive(dtype):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 3, 4, 5)).astype(dtype)
    x[0, 0, 0, :3] = 0.0  # the subgradient at 0 must agree too
    dout = rng.normal(size=x.shape).astype(dtype)
    out_f, cache_f = relu_forward(x)
    out_n, cache_n = relu_forward_naive(x)
    dx_f = relu_backward(dout, cache_f)
    dx_n = relu_backward_naive(dout, cache_n)
    for a, b in ((out_f, out_n), (dx_f, dx_n)):
        assert a.dtype == dtype and b.dtype == dtype
        np.testing.assert_array_equal(a, b)
    assert np.all(dx_f[0, 0, 0, :3] == 0)


@pytest.mark.parametrize("version", VERSIONS)
def test_relu_hand_example(version):
    fwd, bwd = version
    x = np.array([-2.0, -0.0, 0.0, 0.5, 3.0])
    out, cache = fwd(x)
    np.testing.assert_array_equal(out, [0, 0, 0, 0.5, 3])
    dx = bwd(np.array([1.0, 2.0, 3.0, 4.0, 5.0]), cache)
    np.testing.assert_array_equal(dx, [0, 0, 0, 4, 5])
