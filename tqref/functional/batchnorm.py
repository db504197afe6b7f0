"""Spatial batch normalisation, per channel over the batch and both image axes.

Shapes: x, out (N, C, H, W); gamma, beta, running_mean, running_var (C,).
For one channel c, the statistics run over its m = N·H·W values.

Training mode (batch statistics):

    μ      = (1/m) Σ x                       (over n, h, w)
    σ²     = (1/m) Σ (x − μ)²                (biased: what normalises the batch)
    x̂      = (x − μ) / √(σ² + ε)
    y      = γ · x̂ + β

    running_mean ← (1 − momentum) · running_mean + momentum · μ
    running_var  ← (1 − momentum) · running_var  + momentum · σ² · m/(m − 1)

The running variance takes the *unbiased* batch variance, as PyTorch does,
so that an evaluation-mode net estimates the population variance.

Evaluation mode (running statistics, no update):

    x̂ = (x − running_mean) / √(running_var + ε),     y = γ · x̂ + β

Backward, with σ̃ = √(σ² + ε) and dx̂ = γ · dy:

    dβ = Σ dy        dγ = Σ dy · x̂                        (over n, h, w)

    training:   dx = (1/σ̃)/m · (m·dx̂ − Σ dx̂ − x̂ · Σ(dx̂ · x̂))
              = (γ/σ̃)/m · (m·dy − dβ − x̂ · dγ)
    evaluation: dx = (γ/σ̃) · dy       (μ and σ̃ are constants there)

The training formula is the chain rule through x̂ with μ and σ² both
depending on every x of the channel; the two subtracted terms are the
gradient flowing through μ and through σ² respectively.

Three tiers with one signature (``tqref.backend``): ``*_naive``, loops
next to the formulas; the reference backend's array expressions below; the
fast backend's channels-last kernels in ``tqref.kernels.ops``.  Cache of the
first two: ``{"xhat": (N, C, H, W), "inv_std": (C,) = 1/σ̃, "gamma": (C,),
"training": bool}``.
"""

import math

import numpy as np

from ..validation import check_array


def check_inputs(fn, x, gamma, beta, running_mean, running_var, training, momentum, eps):
    check_array(x, f"{fn}: x", ndim=4, finite=False)
    n, c, h, w = x.shape
    for name, v in (("gamma", gamma), ("beta", beta),
                    ("running_mean", running_mean), ("running_var", running_var)):
        if not isinstance(v, np.ndarray):
            raise TypeError(f"{fn}: {name}: expected a numpy.ndarray, got {type(v).__name__}")
        if v.shape != (c,):
            raise ValueError(f"{fn}: {name}: expected shape ({c},) (one per channel of x {x.shape}), "
                             f"got {v.shape}")
        # A float64 parameter next to a float32 x would silently upcast the output.
        if v.dtype != x.dtype:
            raise TypeError(f"{fn}: {name}: expected dtype {x.dtype} (the dtype of x), got {v.dtype}")
    if not isinstance(training, (bool, np.bool_)):
        raise TypeError(f"{fn}: training: expected a bool, got {type(training).__name__}")
    if not 0.0 <= float(momentum) <= 1.0:
        raise ValueError(f"{fn}: momentum: expected a number in [0, 1], got {momentum!r}")
    if not float(eps) > 0.0:
        raise ValueError(f"{fn}: eps: expected a positive number, got {eps!r}")
    if training:
        m = n * h * w
        # The unbiased variance divides by m − 1 (PyTorch refuses the same case).
        if m < 2:
            raise ValueError(f"{fn}: x: training needs at least 2 values per channel "
                             f"(N·H·W ≥ 2), got shape {x.shape}")
        for name, v in (("running_mean", running_mean), ("running_var", running_var)):
            if not v.flags.writeable:
                raise ValueError(f"{fn}: {name}: expected a writeable array (updated in place), "
                                 f"got a read-only one")


# ----------------------------------------------------------------------------
# naive: loops next to the formulas
# ----------------------------------------------------------------------------

def batchnorm_forward_naive(x, gamma, beta, running_mean, running_var, training,
                            momentum=0.1, eps=1e-5):
    """Loop version of :func:`batchnorm_forward` (same arguments, same result).

    Sums are accumulated in Python floats (float64); results are stored in
    the dtype of x.
    """
    check_inputs("batchnorm_forward_naive", x, gamma, beta, running_mean, running_var,
                  training, momentum, eps)
    N, C, H, W = x.shape
    m = N * H * W
    momentum, eps = float(momentum), float(eps)
    out = np.empty_like(x)
    xhat = np.empty_like(x)
    inv_std = np.empty(C, dtype=x.dtype)
    for c in range(C):
        if training:
            s = 0.0
            for n in range(N):
                for i in range(H):
                    for j in range(W):
                        s += float(x[n, c, i, j])
            mean = s / m
            s = 0.0
            for n in range(N):
                for i in range(H):
                    for j in range(W):
                        s += (float(x[n, c, i, j]) - mean) ** 2
            var = s / m
            running_mean[c] = (1.0 - momentum) * float(running_mean[c]) + momentum * mean
            running_var[c] = (1.0 - momentum) * float(running_var[c]) + momentum * var * m / (m - 1)
        else:
            mean = float(running_mean[c])
            var = float(running_var[c])
        inv = 1.0 / math.sqrt(var + eps)
        inv_std[c] = inv
        for n in range(N):
            for i in range(H):
                for j in range(W):
                    xh = (float(x[n, c, i, j]) - mean) * inv
                    xhat[n, c, i, j] = xh
                    out[n, c, i, j] = float(gamma[c]) * xh + float(beta[c])
    return out, {"xhat": xhat, "inv_std": inv_std, "gamma": gamma, "training": bool(training)}


def batchnorm_backward_naive(dout, cache):
    """Loop version of :func:`batchnorm_backward`: dout (N, C, H, W) ->
    (dx (N, C, H, W), dgamma (C,), dbeta (C,))."""
    xhat, inv_std, gamma = cache["xhat"], cache["inv_std"], cache["gamma"]
    N, C, H, W = dout.shape
    m = N * H * W
    dx = np.empty_like(dout)
    dgamma = np.empty(C, dtype=dout.dtype)
    dbeta = np.empty(C, dtype=dout.dtype)
    for c in range(C):
        g, inv = float(gamma[c]), float(inv_std[c])
        sum_dy = 0.0
        sum_dy_xhat = 0.0
        for n in range(N):
            for i in range(H):
                for j in range(W):
                    sum_dy += float(dout[n, c, i, j])
                    sum_dy_xhat += float(dout[n, c, i, j]) * float(xhat[n, c, i, j])
        dbeta[c] = sum_dy
        dgamma[c] = sum_dy_xhat
        # Σ dx̂ = γ·Σ dy and Σ dx̂·x̂ = γ·Σ dy·x̂
        sum_dxhat = g * sum_dy
        sum_dxhat_xhat = g * sum_dy_xhat
        for n in range(N):
            for i in range(H):
                for j in range(W):
                    dxhat = g * float(dout[n, c, i, j])
                    if cache["training"]:
                        dx[n, c, i, j] = inv / m * (m * dxhat - sum_dxhat
                                                    - float(xhat[n, c, i, j]) * sum_dxhat_xhat)
                    else:
                        dx[n, c, i, j] = inv * dxhat
    return dx, dgamma, dbeta


# ----------------------------------------------------------------------------
# reference: array expressions over the axes (N, H, W)
# ----------------------------------------------------------------------------

_AXES = (0, 2, 3)  # batch, height, width: everything but the channel


def _per_channel(v):
    """(C,) -> (1, C, 1, 1), to broadcast against (N, C, H, W)."""
    return v.reshape(1, -1, 1, 1)


def batchnorm_forward(x, gamma, beta, running_mean, running_var, training,
                      momentum=0.1, eps=1e-5):
    """Batch normalisation forward.

    x:            (N, C, H, W) float32 or float64
    gamma, beta:  (C,) scale and shift, same dtype as x
    running_mean, running_var: (C,) same dtype as x; updated IN PLACE in
                  training mode, read in evaluation mode
    training:     bool, batch statistics (True) or running statistics (False)
    momentum:     weight of the new batch statistic in the running average
    eps:          added to the variance before the square root

    Returns (out (N, C, H, W), cache); the module docstring has the
    equations and the cache.  The statistics are summed in float64 (a
    float32 sum over N·H·W = 131,072 values would lose digits).
    """
    check_inputs("batchnorm_forward", x, gamma, beta, running_mean, running_var,
                 training, momentum, eps)
    N, C, H, W = x.shape
    m = N * H * W
    if training:
        mean = x.mean(axis=_AXES, dtype=np.float64)                              # μ
        var = ((x - _per_channel(mean)) ** 2).mean(axis=_AXES, dtype=np.float64)  # σ² (biased)
        running_mean[...] = (1 - momentum) * running_mean + momentum * mean
        running_var[...] = (1 - momentum) * running_var + momentum * var * m / (m - 1)
    else:
        mean, var = running_mean.astype(np.float64), running_var.astype(np.float64)
    inv_std = (1.0 / np.sqrt(var + eps)).astype(x.dtype)                          # 1/σ̃
    xhat = (x - _per_channel(mean.astype(x.dtype))) * _per_channel(inv_std)
    out = _per_channel(gamma) * xhat + _per_channel(beta)
    return out, {"xhat": xhat, "inv_std": inv_std, "gamma": gamma, "training": bool(training)}


def batchnorm_backward(dout, cache):
    """Batch normalisation backward: dout (N, C, H, W) ->
    (dx (N, C, H, W), dgamma (C,), dbeta (C,)).

        dβ = Σ dy,   dγ = Σ dy · x̂                       (over n, h, w)
        training:    dx = (γ/σ̃)/m · (m·dy − dβ − x̂ · dγ)
        evaluation:  dx = (γ/σ̃) · dy
    """
    ### BEGIN SOLUTION
    xhat, inv_std, gamma = cache["xhat"], cache["inv_std"], cache["gamma"]
    N, C, H, W = dout.shape
    m = N * H * W
    dt = dout.dtype
    # sums in float64: over axes (0, 2, 3) NumPy adds float32 one by one, and
    # with m = 131,072 terms that loses several digits
    dbeta = dout.sum(axis=_AXES, dtype=np.float64)
    dgamma = (dout * xhat).sum(axis=_AXES, dtype=np.float64)
    scale = _per_channel(gamma * inv_std)                                          # γ/σ̃
    if cache["training"]:
        # (γ/σ̃)/m · (m·dy − dβ − x̂·dγ), written without the factor m that
        # would make the subtraction cancel in float32
        dx = scale * (dout - _per_channel((dbeta / m).astype(dt)) - xhat * _per_channel((dgamma / m).astype(dt)))
    else:
        dx = scale * dout
    return dx, dgamma.astype(dt), dbeta.astype(dt)
    ### END SOLUTION


# ----------------------------------------------------------------------------
# fused: batch norm, residual add and ReLU in one pass
# ----------------------------------------------------------------------------

def batchnorm_relu_forward_naive(x, gamma, beta, running_mean, running_var, training,
                                 momentum=0.1, eps=1e-5, residual=None):
    """out = ReLU(BN(x) + residual), composed from the naive pieces
    (residual None: ReLU(BN(x))).  cache = (bn cache, out)."""
    bn, bn_cache = batchnorm_forward_naive(x, gamma, beta, running_mean, running_var, training,
                                           momentum, eps)
    pre = bn if residual is None else bn + residual
    out = np.where(pre > 0, pre, 0).astype(x.dtype)
    return out, (bn_cache, out)


def batchnorm_relu_backward_naive(dout, cache):
    """-> (dx, dgamma, dbeta, dsum): dsum = dout·1[out > 0] is the gradient
    of the pre-activation sum, i.e. of the residual; dx, dγ, dβ are the
    batch-norm backward of dsum."""
    bn_cache, out = cache
    dsum = np.where(out > 0, dout, 0).astype(dout.dtype)
    return batchnorm_backward_naive(dsum, bn_cache) + (dsum,)


def check_residual(fn, x, residual):
    """The residual of the fused operation has x's shape and dtype (or is None)."""
    if residual is not None and (not isinstance(residual, np.ndarray) or residual.shape != x.shape
                                 or residual.dtype != x.dtype):
        raise ValueError(f"{fn}: residual: expected an array of shape {x.shape} and dtype {x.dtype} "
                         f"(those of x), got {getattr(residual, 'shape', type(residual).__name__)} "
                         f"{getattr(residual, 'dtype', '')}")


def batchnorm_relu_forward(x, gamma, beta, running_mean, running_var, training,
                           momentum=0.1, eps=1e-5, residual=None):
    """out = ReLU(BN(x) + residual) (residual None: ReLU(BN(x))).

    Same arguments as :func:`batchnorm_forward`, plus ``residual`` (shape
    and dtype of x).  Here the three steps one after the other; the fast
    backend does them in one pass.  cache = (bn cache, out)."""
    check_residual("batchnorm_relu_forward", x, residual)
    bn, bn_cache = batchnorm_forward(x, gamma, beta, running_mean, running_var, training, momentum, eps)
    pre = bn if residual is None else bn + residual
    out = np.maximum(pre, 0)
    return out, (bn_cache, out)


def batchnorm_relu_backward(dout, cache):
    """dout (N, C, H, W) -> (dx, dgamma, dbeta, dsum): dsum = dout·1[out > 0],
    the gradient of the pre-activation sum (so also of the residual); dx,
    dγ, dβ are the batch-norm backward of dsum."""
    bn_cache, out = cache
    dsum = dout * (out > 0)
    return batchnorm_backward(dsum, bn_cache) + (dsum,)
