"""Batch normalisation: gradients, naive == fast, and the train/eval semantics."""

import numpy as np
import pytest

from tqref.functional.batchnorm import (
    batchnorm_backward,
    batchnorm_backward_naive,
    batchnorm_forward,
    batchnorm_forward_naive,
)
from tqref.gradcheck import check_gradient

FAST = (batchnorm_forward, batchnorm_backward)
NAIVE = (batchnorm_forward_naive, batchnorm_backward_naive)
VERSIONS = [pytest.param(FAST, id="fast"), pytest.param(NAIVE, id="naive")]

# N·H·W ≥ 2 everywhere (training needs an unbiased variance); odd sizes and N = 1 included.
SHAPES = [(2, 3, 4, 5), (1, 2, 3, 3), (4, 2, 1, 1), (1, 1, 1, 3), (3, 2, 3, 1)]


def make_inputs(shape, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    C = shape[1]
    # A non-zero mean and a channel-dependent scale, so a wrong axis or a
    # missing centring shows up.
    x = (rng.normal(3.0, 2.0, shape) * rng.uniform(0.5, 2.0, (1, C, 1, 1))).astype(dtype)
    gamma = rng.uniform(0.5, 1.5, C).astype(dtype) * rng.choice([-1, 1], C).astype(dtype)
    beta = rng.normal(0, 1, C).astype(dtype)
    rmean = rng.normal(0, 1, C).astype(dtype)
    rvar = rng.uniform(0.5, 2.0, C).astype(dtype)
    dout = rng.normal(0, 1, shape).astype(dtype)
    return x, gamma, beta, rmean, rvar, dout


# ----------------------------------------------------------------------------
# gradients
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("shape", SHAPES)
def test_gradients_match_numeric(version, training, shape):
    fwd, bwd = version
    x, gamma, beta, rmean, rvar, dout = make_inputs(shape)

    # Copies of the running stats for every call: training mode updates them.
    def f():
        return fwd(x, gamma, beta, rmean.copy(), rvar.copy(), training)[0]

    _, cache = fwd(x, gamma, beta, rmean.copy(), rvar.copy(), training)
    dx, dgamma, dbeta = bwd(dout, cache)
    check_gradient(f, x, dx, dout, tol=1e-6, name="x")
    check_gradient(f, gamma, dgamma, dout, tol=1e-6, name="gamma")
    check_gradient(f, beta, dbeta, dout, tol=1e-6, name="beta")


@pytest.mark.parametrize("version", VERSIONS)
def test_gradient_check_catches_eval_backward_in_training(version):
    # The check has teeth: the eval-mode dx (which ignores the dependence of
    # μ and σ² on x) is wrong in training mode and must be rejected.
    fwd, bwd = version
    x, gamma, beta, rmean, rvar, dout = make_inputs((2, 3, 3, 3))
    _, cache = fwd(x, gamma, beta, rmean.copy(), rvar.copy(), True)
    wrong = dict(cache, training=False)
    dx_wrong = bwd(dout, wrong)[0]
    with pytest.raises(AssertionError, match="gradient of x"):
        check_gradient(lambda: fwd(x, gamma, beta, rmean.copy(), rvar.copy(), True)[0],
                       x, dx_wrong, dout, name="x")


# ----------------------------------------------------------------------------
# naive == fast
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-10), (np.float32, 1e-5)], ids=["f64", "f32"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (1, 2, 3, 3), (3, 4, 1, 2)])
def test_fast_equals_naive(dtype, rtol, training, shape):
    x, gamma, beta, rmean, rvar, dout = make_inputs(shape, dtype)
    rm_f, rv_f, rm_n, rv_n = rmean.copy(), rvar.copy(), rmean.copy(), rvar.copy()
    out_f, cache_f = batchnorm_forward(x, gamma, beta, rm_f, rv_f, training, momentum=0.3)
    out_n, cache_n = batchnorm_forward_naive(x, gamma, beta, rm_n, rv_n, training, momentum=0.3)
    grads_f = batchnorm_backward(dout, cache_f)
    grads_n = batchnorm_backward_naive(dout, cache_n)

    pairs = [("out", out_f, out_n), ("running_mean", rm_f, rm_n), ("running_var", rv_f, rv_n),
             ("xhat", cache_f["xhat"], cache_n["xhat"]), ("inv_std", cache_f["inv_std"], cache_n["inv_std"])]
    pairs += [(name, a, b) for name, a, b in zip(("dx", "dgamma", "dbeta"), grads_f, grads_n)]
    for name, a, b in pairs:
        assert a.dtype == dtype and b.dtype == dtype, name
        assert a.shape == b.shape, name
        # atol scaled to the array: dx is a difference of nearly equal sums.
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * np.abs(b).max(), err_msg=name)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_float32_stays_float32(version, training):
    fwd, bwd = version
    x, gamma, beta, rmean, rvar, dout = make_inputs((2, 3, 3, 3), np.float32)
    out, cache = fwd(x, gamma, beta, rmean, rvar, training)
    assert out.dtype == np.float32
    assert rmean.dtype == np.float32 and rvar.dtype == np.float32
    for g in bwd(dout, cache):
        assert g.dtype == np.float32


# ----------------------------------------------------------------------------
# semantics
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("version", VERSIONS)
def test_training_normalises_each_channel(version):
    fwd, _ = version
    x, _, _, rmean, rvar, _ = make_inputs((4, 3, 5, 5))
    C = x.shape[1]
    eps = 1e-5
    out, _ = fwd(x, np.ones(C), np.zeros(C), rmean, rvar, True, eps=eps)
    mean = out.mean(axis=(0, 2, 3))
    var = out.var(axis=(0, 2, 3))
    np.testing.assert_allclose(mean, 0.0, atol=1e-12)
    np.testing.assert_allclose(var, 1.0, atol=1e-4)
    # Exactly σ²/(σ² + ε), the only deviation from 1.
    batch_var = x.var(axis=(0, 2, 3))
    np.testing.assert_allclose(var, batch_var / (batch_var + eps), rtol=1e-12)


@pytest.mark.parametrize("version", VERSIONS)
def test_training_applies_gamma_and_beta_per_channel(version):
    fwd, _ = version
    x, gamma, beta, rmean, rvar, _ = make_inputs((3, 3, 4, 4))
    out, _ = fwd(x, gamma, beta, rmean, rvar, True, eps=1e-5)
    np.testing.assert_allclose(out.mean(axis=(0, 2, 3)), beta, atol=1e-12)
    np.testing.assert_allclose(out.std(axis=(0, 2, 3)), np.abs(gamma), rtol=1e-4)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("momentum", [0.1, 0.3, 1.0])
def test_running_stats_one_step_use_unbiased_variance(version, momentum):
    fwd, _ = version
    x, gamma, beta, rmean, rvar, _ = make_inputs((2, 3, 3, 3))  # m = 18: the m/(m-1) factor is 6 %
    rm0, rv0 = rmean.copy(), rvar.copy()
    rm_id, rv_id = id(rmean), id(rvar)
    fwd(x, gamma, beta, rmean, rvar, True, momentum=momentum)
    assert id(rmean) == rm_id and id(rvar) == rv_id
    expected_mean = (1 - momentum) * rm0 + momentum * x.mean(axis=(0, 2, 3))
    unbiased = x.reshape(2, 3, 9).transpose(1, 0, 2).reshape(3, 18).var(axis=1, ddof=1)
    expected_var = (1 - momentum) * rv0 + momentum * unbiased
    np.testing.assert_allclose(rmean, expected_mean, rtol=1e-12)
    np.testing.assert_allclose(rvar, expected_var, rtol=1e-12)
    biased_version = (1 - momentum) * rv0 + momentum * x.var(axis=(0, 2, 3))
    assert not np.allclose(rvar, biased_version, rtol=1e-3)


@pytest.mark.parametrize("version", VERSIONS)
def test_eval_uses_running_stats_and_leaves_them_alone(version):
    fwd, _ = version
    x, gamma, beta, rmean, rvar, _ = make_inputs((2, 3, 4, 4))
    rm0, rv0 = rmean.copy(), rvar.copy()
    eps = 1e-5
    out, _ = fwd(x, gamma, beta, rmean, rvar, False, momentum=0.5, eps=eps)
    np.testing.assert_array_equal(rmean, rm0)
    np.testing.assert_array_equal(rvar, rv0)
    b = lambda v: v[None, :, None, None]  # noqa: E731
    expected = b(gamma) * (x - b(rm0)) / np.sqrt(b(rv0) + eps) + b(beta)
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("version", VERSIONS)
def test_train_and_eval_agree_once_running_stats_are_the_batch_stats(version):
    fwd, _ = version
    shape = (2, 3, 3, 3)
    m = 2 * 3 * 3
    x, gamma, beta, _, _, _ = make_inputs(shape)
    C = shape[1]
    rmean, rvar = np.zeros(C), np.ones(C)
    out_train, _ = fwd(x, gamma, beta, rmean.copy(), rvar.copy(), True)
    out_eval, _ = fwd(x, gamma, beta, rmean, rvar, False)
    # Fresh running stats (0, 1) are far from the batch's (mean ≈ 3, std ≈ 2).
    assert np.abs(out_train - out_eval).max() > 0.5

    # momentum = 1 copies the batch statistics, the variance unbiased ...
    fwd(x, gamma, beta, rmean, rvar, True, momentum=1.0)
    out_eval_unbiased, _ = fwd(x, gamma, beta, rmean, rvar, False)
    assert not np.allclose(out_eval_unbiased, out_train, rtol=1e-4, atol=1e-6)
    # ... so undoing the m/(m−1) factor makes evaluation reproduce training.
    out_eval_biased, _ = fwd(x, gamma, beta, rmean, rvar * (m - 1) / m, False)
    np.testing.assert_allclose(out_eval_biased, out_train, rtol=1e-12, atol=1e-12)


def test_running_stats_converge_to_batch_stats():
    x, gamma, beta, _, _, _ = make_inputs((2, 3, 3, 3))
    m = 18
    rmean, rvar = np.zeros(3), np.ones(3)
    out_train, _ = batchnorm_forward(x, gamma, beta, rmean.copy(), rvar.copy(), True)
    for _ in range(300):  # 0.9**300 ≈ 2e-14
        batchnorm_forward(x, gamma, beta, rmean, rvar, True, momentum=0.1)
    np.testing.assert_allclose(rmean, x.mean(axis=(0, 2, 3)), rtol=1e-10)
    np.testing.assert_allclose(rvar, x.var(axis=(0, 2, 3)) * m / (m - 1), rtol=1e-10)
    out_eval, _ = batchnorm_forward(x, gamma, beta, rmean, rvar * (m - 1) / m, False)
    np.testing.assert_allclose(out_eval, out_train, rtol=1e-9, atol=1e-9)


# ----------------------------------------------------------------------------
# input checks
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("fwd", [batchnorm_forward, batchnorm_forward_naive], ids=["fast", "naive"])
def test_bad_inputs_raise_with_clear_messages(fwd):
    name = fwd.__name__
    x = np.zeros((2, 16, 3, 3))
    c16 = np.ones(16)
    with pytest.raises(ValueError, match=rf"{name}: gamma: expected shape \(16,\).*got \(8,\)"):
        fwd(x, np.ones(8), c16, c16.copy(), c16.copy(), True)
    with pytest.raises(ValueError, match=rf"{name}: running_var: expected shape \(16,\).*got \(16, 1\)"):
        fwd(x, c16, c16, c16.copy(), np.ones((16, 1)), True)
    with pytest.raises(ValueError, match=rf"{name}: x: expected a 4-D array, got 3-D"):
        fwd(np.zeros((16, 3, 3)), c16, c16, c16.copy(), c16.copy(), True)
    with pytest.raises(TypeError, match=rf"{name}: beta: expected dtype float64.*got float32"):
        fwd(x, c16, c16.astype(np.float32), c16.copy(), c16.copy(), True)
    with pytest.raises(TypeError, match=rf"{name}: x: expected dtype float32 or float64, got int64"):
        fwd(np.zeros((2, 16, 3, 3), dtype=np.int64), c16, c16, c16.copy(), c16.copy(), True)
    with pytest.raises(ValueError, match=rf"{name}: x: training needs at least 2 values per channel"):
        fwd(np.zeros((1, 16, 1, 1)), c16, c16, c16.copy(), c16.copy(), True)
    with pytest.raises(ValueError, match=rf"{name}: momentum"):
        fwd(x, c16, c16, c16.copy(), c16.copy(), True, momentum=1.5)
    with pytest.raises(ValueError, match=rf"{name}: eps"):
        fwd(x, c16, c16, c16.copy(), c16.copy(), True, eps=0.0)
    # One value per channel is fine in evaluation mode.
    out, _ = fwd(np.zeros((1, 16, 1, 1)), c16, c16, c16.copy(), c16.copy(), False)
    assert out.shape == (1, 16, 1, 1)
