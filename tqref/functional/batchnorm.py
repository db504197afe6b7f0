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

Cache (same layout for the naive and the fast version, so they mix):
``{"xhat": (N, C, H, W), "inv_std": (C,) = 1/σ̃, "gamma": (C,), "training": bool}``.
"""

import math

import numpy as np

from ..kernels import batchnorm as kbn
from ..kernels.layout import to_nchw, to_nhwc
from ..kernels.parallel import parallel_for
from ..validation import check_array


def _check_inputs(fn, x, gamma, beta, running_mean, running_var, training, momentum, eps):
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
    _check_inputs("batchnorm_forward_naive", x, gamma, beta, running_mean, running_var,
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
# fast: channels-last Numba kernels, both cores (tqref.kernels.batchnorm)
# ----------------------------------------------------------------------------

# Below this many rows (pixels) a kernel runs on the calling thread: waking a
# second thread costs more than it saves on the tiny arrays of a gradient check.
_PARALLEL_MIN_ROWS = 4096


class FastCache(dict):
    """The fast version's cache: the keys of the module docstring, except
    that ``"xhat"`` is not written by the forward pass (one tensor write
    saved per layer); it is derived from the stored input on first access,
    so the naive backward (and anyone reading the cache) still finds it.

    Stored instead: ``"x_nhwc"`` (the input, channels-last), ``"mean"``
    (the μ used), and for the fused version ``"out_nhwc"`` and ``"relu"``.
    """

    def __missing__(self, key):
        if key != "xhat":
            raise KeyError(key)
        xh = self["x_nhwc"]
        xhat = (xh - self["mean"]) * self["inv_std"]
        self["xhat"] = to_nchw(xhat)
        return self["xhat"]


# Rows of C = 16 numbers make the kernels' inner loop over C one short loop per
# pixel, which costs more than the arithmetic.  The (M, C) matrix is therefore
# handed to them as (M/k, k·C) — the same memory, k pixels per row — with the
# per-channel vectors tiled k times, so that column j is channel j mod C and
# the inner loop runs over ≥ FOLD_WIDTH numbers.  Measured (python
# benchmarks/batchnorm.py, batch 128, one thread, with a residual): at 16
# channels forward 1.9–2.6 → 1.4–2.0 ms and backward 2.7–3.9 → 2.1–3.0 ms, at
# 32 channels 5–18 % faster, at 64 channels (already 64 wide) the same.
FOLD_WIDTH = 64


def _fold(M, C):
    """Pixels per folded row: k = FOLD_WIDTH // C when it divides M, else 1."""
    k = max(1, FOLD_WIDTH // C)
    return k if M % k == 0 else 1


def _rows(a_nchw):
    """(N, C, H, W) -> its (N·H·W, C) channels-last matrix (a view when possible)."""
    return to_nhwc(a_nchw).reshape(-1, a_nchw.shape[1])


def _fast_forward(x, gamma, beta, running_mean, running_var, training, momentum, eps,
                  residual=None, relu=False):
    momentum, eps = float(momentum), float(eps)
    N, C, H, W = x.shape
    dtype = x.dtype
    xh = to_nhwc(x)
    M = N * H * W
    k = _fold(M, C)
    rows, L = M // k, k * C  # folded: k pixels per row, see FOLD_WIDTH
    x2 = xh.reshape(rows, L)
    if training:
        parts = {}

        def stats(t, r0, r1):
            mean, m2 = np.empty(L), np.empty(L)
            kbn.partial_stats(x2, r0, r1, mean, m2)
            parts[t] = (r1 - r0, mean, m2)

        parallel_for(stats, rows, _PARALLEL_MIN_ROWS // k)
        # Chan's merge of the per-thread (count, mean, M2), per column
        n, mean, m2 = parts[0]
        for t in range(1, len(parts)):
            nb, mb, m2b = parts[t]
            delta = mb - mean
            total = n + nb
            mean = mean + delta * (nb / total)
            m2 = m2 + m2b + delta * delta * (n * nb / total)
            n = total
        # and of the k columns of each channel, n = M/k values each
        col_means, col_m2 = mean.reshape(k, C), m2.reshape(k, C)
        mean = col_means.mean(axis=0)
        m2 = col_m2.sum(axis=0) + n * ((col_means - mean) ** 2).sum(axis=0)
        var = m2 / M
        running_mean *= 1.0 - momentum
        running_mean += (momentum * mean).astype(dtype)
        running_var *= 1.0 - momentum
        running_var += (momentum * var * (M / (M - 1))).astype(dtype)
    else:
        mean = running_mean.astype(np.float64)
        var = running_var.astype(np.float64)
    inv_std64 = 1.0 / np.sqrt(var + eps)
    mean_d, inv_std = mean.astype(dtype), inv_std64.astype(dtype)
    scale = (gamma.astype(np.float64) * inv_std64).astype(dtype)
    y = np.empty((N, H, W, C), dtype=dtype)
    y2 = y.reshape(rows, L)
    res2 = _rows(residual).reshape(rows, L) if residual is not None else x2

    mean_t, scale_t, beta_t = np.tile(mean_d, k), np.tile(scale, k), np.tile(beta, k)

    def normalise(t, r0, r1):
        kbn.apply(x2, res2, y2, r0, r1, mean_t, scale_t, beta_t, residual is not None, relu)

    parallel_for(normalise, rows, _PARALLEL_MIN_ROWS // k)
    cache = FastCache(inv_std=inv_std, gamma=gamma, training=bool(training),
                      x_nhwc=xh, mean=mean_d, relu=relu, out_nhwc=y if relu else None)
    return to_nchw(y), cache


def _fast_backward(dout, cache):
    gamma, training = cache["gamma"], cache["training"]
    N, C, H, W = dout.shape
    dtype = dout.dtype
    M = N * H * W
    k = _fold(M, C)
    rows, L = M // k, k * C  # folded: k pixels per row, see FOLD_WIDTH
    if "x_nhwc" in cache:
        x2 = cache["x_nhwc"].reshape(rows, L)
        mean, s = cache["mean"], cache["inv_std"]
    else:  # a cache of the naive version: x̂ itself, with mean 0 and scale 1
        x2 = _rows(cache["xhat"]).reshape(rows, L)
        mean, s = np.zeros(C, dtype), np.ones(C, dtype)
    relu = bool(cache.get("relu", False))
    d2 = _rows(dout).reshape(rows, L)
    y2 = cache["out_nhwc"].reshape(rows, L) if relu else d2
    mean_t, s_t = np.tile(mean, k), np.tile(s, k)
    parts = {}

    def sums(t, r0, r1):
        s_dy, s_dyx = np.empty(L), np.empty(L)
        kbn.backward_sums(d2, x2, y2, r0, r1, mean_t, s_t, relu, s_dy, s_dyx)
        parts[t] = (s_dy, s_dyx)

    parallel_for(sums, rows, _PARALLEL_MIN_ROWS // k)
    # per thread, then the k columns of each channel
    s_dy = sum(p[0] for p in parts.values()).reshape(k, C).sum(axis=0)
    s_dyx = sum(p[1] for p in parts.values()).reshape(k, C).sum(axis=0)  # Σ dy·x̂ (x̂ from x, mean and s)
    a = gamma.astype(np.float64) * cache["inv_std"].astype(np.float64)
    if training:
        b, e = a * s_dy / M, a * s_dyx / M * s.astype(np.float64)
    else:
        b, e = np.zeros(C), np.zeros(C)
    a, b, e = (np.tile(v.astype(dtype), k) for v in (a, b, e))
    dx = np.empty((N, H, W, C), dtype=dtype)
    dx2 = dx.reshape(rows, L)
    dsum = np.empty((N, H, W, C), dtype=dtype) if relu else dx
    dsum2 = dsum.reshape(rows, L)

    def input_gradient(t, r0, r1):
        kbn.backward_dx(d2, x2, y2, dx2, dsum2, r0, r1, mean_t, a, b, e, relu, relu)

    parallel_for(input_gradient, rows, _PARALLEL_MIN_ROWS // k)
    grads = (to_nchw(dx), s_dyx.astype(dtype), s_dy.astype(dtype))
    return grads + ((to_nchw(dsum),) if relu else ())


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

    Returns (out (N, C, H, W), cache); see the module docstring for the
    equations and the cache contents (here a ``FastCache``).  Computed on
    the channels-last (pixels, C) matrix, rows split over the cores; out is
    channels-last memory with the NCHW shape.
    """
    _check_inputs("batchnorm_forward", x, gamma, beta, running_mean, running_var,
                  training, momentum, eps)
    return _fast_forward(x, gamma, beta, running_mean, running_var, training, momentum, eps)


def batchnorm_backward(dout, cache):
    """Batch normalisation backward: dout (N, C, H, W) ->
    (dx (N, C, H, W), dgamma (C,), dbeta (C,)).

    Training mode: dx = (γ/σ̃)/m · (m·dy − dβ − x̂·dγ), the compact form of
    (1/σ̃)/m · (m·dx̂ − Σdx̂ − x̂·Σ(dx̂·x̂)) with dx̂ = γ·dy.
    Evaluation mode: dx = (γ/σ̃) · dy.
    Two passes: the per-channel sums dβ, dγ (per core, then added), then dx.
    """
    return _fast_backward(dout, cache)[:3]


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


def batchnorm_relu_forward(x, gamma, beta, running_mean, running_var, training,
                           momentum=0.1, eps=1e-5, residual=None):
    """out = ReLU(BN(x) + residual) in one pass (residual None: ReLU(BN(x))).

    Same arguments as :func:`batchnorm_forward`, plus ``residual`` (shape of
    x, same dtype).  Neither BN(x) nor the sum is stored: the backward
    recomputes x̂ from x and takes the ReLU mask from out.
    """
    _check_inputs("batchnorm_relu_forward", x, gamma, beta, running_mean, running_var,
                  training, momentum, eps)
    if residual is not None and (residual.shape != x.shape or residual.dtype != x.dtype):
        raise ValueError(f"batchnorm_relu_forward: residual: expected shape {x.shape} and dtype "
                         f"{x.dtype}, got {residual.shape} {residual.dtype}")
    return _fast_forward(x, gamma, beta, running_mean, running_var, training, momentum, eps,
                         residual=residual, relu=True)


def batchnorm_relu_backward(dout, cache):
    """dout (N, C, H, W) -> (dx, dgamma, dbeta, dsum), as the naive twin."""
    return _fast_backward(dout, cache)
