"""The fast backend: the operations of ``tqref.functional`` on Numba kernels.

Same signatures and the same meaning as the reference operations of
``tqref.functional`` (``tqref.backend`` puts them in one table; the
contract tests hold the two equal).  What differs is how they compute:

* **channels-last memory.**  Activations live as (N, H, W, C) buffers and
  travel between layers as NCHW-shaped views of them
  (``tqref.kernels.layout``): a convolution's patches and batch norm's
  per-channel rows are then contiguous.  A network converts once, at its
  first layer.
* **both cores.**  ``parallel_for`` hands each core a slice of the batch
  (or of the pixels); per-core partial sums are merged afterwards.
* **fusion.**  Batch norm + residual add + ReLU is one pass, forward and
  backward, and stores neither BN(x) nor the sum.
* **fewer passes.**  The quantizer computes every expansion in two passes
  over W; the SGD update reads and writes each element once.

Caches are this backend's own (a layer hands a cache back to the backend
that made it).  Operations that NumPy already runs as one BLAS call or one
vectorised expression (linear, loss, max pooling, add, the
straight-through gradient) are the reference ones: ``tqref.backend``
lists them.
"""

import numpy as np

from tqref.functional import batchnorm as _bn
from tqref.functional import conv as _conv
from tqref.functional import pooling as _pool
from tqref.functional import shortcut as _sc
from tqref.kernels import batchnorm as kbn
from tqref.kernels import elementwise as kew
from tqref.kernels.augment import crop_flip  # noqa: F401  (an operation of this backend)
from tqref.kernels.conv_nhwc import conv_backward_nhwc, conv_forward_nhwc
from tqref.kernels.layout import flat_view, to_nchw, to_nhwc
from tqref.kernels.parallel import parallel_for
from tqref.kernels.quantize import ternarize_max_rule
from tqref.kernels.reduce import all_finite  # noqa: F401  (an operation of this backend)
from tqref.kernels.sgd import sgd_update  # noqa: F401  (an operation of this backend)
from tqref.ternary import quantize as q

# ----------------------------------------------------------------------------
# convolution: channels-last, per-image columns + BLAS, or Winograd
# ----------------------------------------------------------------------------

def conv2d_forward(x, w, b=None, stride=1, padding=0):
    """``tqref.functional.conv2d_forward``, channels-last: each thread gathers
    the patches of one image at a time into a column block that stays in its
    cache and multiplies it by the weights; 3×3 stride-1 layers with ≥ 16 input
    and output channels use Winograd F(2×2, 3×3) (``conv_nhwc.WINOGRAD_MIN_CHANNELS``).  ``out``
    is channels-last memory with the NCHW shape; x may have either layout.

    cache = (x_nhwc, w, has_bias, stride, padding): the column matrix is
    never stored, the backward rebuilds each image's as it needs it."""
    stride, padding, H_out, W_out = _conv.check_inputs(x, w, b, stride, padding)
    xh = to_nhwc(x)
    out = conv_forward_nhwc(xh, w, stride, padding)
    if b is not None:
        out += b  # NHWC: the bias runs along the last axis
    return to_nchw(out), (xh, w, b is not None, stride, padding)


def conv2d_backward(dout, cache):
    """dw = Σ_n cols(x[n])ᵀ @ dout[n] (per-thread partial sums), dx = conv(dout,
    flipped w) for stride 1 and col2im(dout @ w_kᵀ) otherwise, db = Σ dout."""
    xh, w, has_bias, stride, padding = cache
    N, H, W, C = xh.shape
    F, _, HH, WW = w.shape
    H_out = _conv.conv_output_size(H, HH, stride, padding)
    W_out = _conv.conv_output_size(W, WW, stride, padding)
    _conv.check_dout(dout, (N, F, H_out, W_out), xh.dtype, "conv2d_backward")
    douth = to_nhwc(dout)
    dxh, dw = conv_backward_nhwc(xh, w, douth, stride, padding)
    db = douth.reshape(-1, F).sum(axis=0) if has_bias else None
    return to_nchw(dxh), dw, db


# ----------------------------------------------------------------------------
# ReLU: element-wise over the raw memory, both cores
# ----------------------------------------------------------------------------

# Below this many elements a kernel runs on the calling thread alone.
_PARALLEL_MIN_ELEMENTS = 1 << 16


def relu_forward(x):
    """Same layout out as in.  cache = out: the backward needs only the sign,
    and out > 0 exactly where x > 0, so x need not be kept alive (the next
    layer keeps out anyway)."""
    xf = flat_view(x)
    if xf is None:
        x = np.ascontiguousarray(x)
        xf = x.reshape(-1)
    out = np.empty_like(x)  # same layout as x (order "K")
    of = flat_view(out)
    parallel_for(lambda t, i0, i1: kew.relu_forward(xf, of, i0, i1), xf.size, _PARALLEL_MIN_ELEMENTS)
    return out, out


def relu_backward(dout, cache):
    """dx = dout where the cached out > 0, else 0."""
    y = cache
    yf = flat_view(y)
    if yf is None:
        y = np.ascontiguousarray(y)
        yf = y.reshape(-1)
    d = dout if dout.strides == y.strides else _like(dout, y)
    df = flat_view(d)
    dx = np.empty_like(y, dtype=dout.dtype)
    dxf = flat_view(dx)
    parallel_for(lambda t, i0, i1: kew.relu_backward(df, yf, dxf, i0, i1), yf.size, _PARALLEL_MIN_ELEMENTS)
    return dx


def _like(a, ref):
    """a copied into ref's memory layout (C order or channels-last)."""
    out = np.empty_like(ref, dtype=a.dtype)
    out[...] = a
    return out


# ----------------------------------------------------------------------------
# batch norm (+ residual add + ReLU): the (pixels, C) matrix, rows over the cores
# ----------------------------------------------------------------------------

# Below this many rows (pixels) a kernel runs on the calling thread: waking a
# second thread costs more than it saves on the tiny arrays of a gradient check.
_PARALLEL_MIN_ROWS = 4096


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
    cache = dict(inv_std=inv_std, gamma=gamma, training=bool(training),
                 x_nhwc=xh, mean=mean_d, relu=relu, out_nhwc=y if relu else None)
    return to_nchw(y), cache


def _fast_backward(dout, cache):
    gamma, training = cache["gamma"], cache["training"]
    N, C, H, W = dout.shape
    dtype = dout.dtype
    M = N * H * W
    k = _fold(M, C)
    rows, L = M // k, k * C  # folded: k pixels per row, see FOLD_WIDTH
    x2 = cache["x_nhwc"].reshape(rows, L)
    mean, s = cache["mean"], cache["inv_std"]
    relu = cache["relu"]
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
    """``tqref.functional.batchnorm_forward`` on the channels-last (pixels, C)
    matrix: per-core statistics merged with Chan's formula, then one pass
    that normalises.  x̂ is not stored: the backward recomputes it from x."""
    _bn.check_inputs("batchnorm_forward", x, gamma, beta, running_mean, running_var,
                     training, momentum, eps)
    return _fast_forward(x, gamma, beta, running_mean, running_var, training, momentum, eps)


def batchnorm_backward(dout, cache):
    """Two passes: the per-channel sums dβ, dγ (per core, then added), then dx."""
    return _fast_backward(dout, cache)[:3]


def batchnorm_relu_forward(x, gamma, beta, running_mean, running_var, training,
                           momentum=0.1, eps=1e-5, residual=None):
    """ReLU(BN(x) + residual) in one pass; neither BN(x) nor the sum is stored:
    the backward recomputes x̂ from x and takes the ReLU mask from out."""
    _bn.check_inputs("batchnorm_relu_forward", x, gamma, beta, running_mean, running_var,
                     training, momentum, eps)
    _bn.check_residual("batchnorm_relu_forward", x, residual)
    return _fast_forward(x, gamma, beta, running_mean, running_var, training, momentum, eps,
                         residual=residual, relu=True)


def batchnorm_relu_backward(dout, cache):
    """-> (dx, dgamma, dbeta, dsum), as the reference."""
    return _fast_backward(dout, cache)


# ----------------------------------------------------------------------------
# global average pooling and the option-A shortcut, channels-last
# ----------------------------------------------------------------------------

def global_avg_pool_forward(x):
    """The mean over the rows of the channels-last (N, H·W, C) view."""
    _pool.check_gap_input("global_avg_pool_forward", x)
    N, C, H, W = x.shape
    return to_nhwc(x).reshape(N, H * W, C).mean(axis=1), (x.shape, x.dtype)


def global_avg_pool_backward(dout, cache):
    """Every pixel gets dout / (H·W); channels-last memory."""
    (N, C, H, W), dtype = cache
    dx = np.empty((N, H, W, C), dtype=dtype)
    # Assign instead of returning np.broadcast_to: callers may write into dx.
    dx[...] = (dout / (H * W))[:, None, None, :]
    return to_nchw(dx)


def option_a_shortcut_forward(x, out_channels):
    """out_nhwc[:, :, :, p : p + C] = x_nhwc[:, ::2, ::2, :]: channels-last in and out."""
    out_channels = _sc.check_shortcut("option_a_shortcut_forward", x, out_channels)
    N, C, H, W = x.shape
    p = (out_channels - C) // 2
    sub = to_nhwc(x)[:, ::2, ::2, :]
    out = np.zeros(sub.shape[:3] + (out_channels,), dtype=x.dtype)
    out[..., p : p + C] = sub
    return to_nchw(out), (x.shape, p)


def option_a_shortcut_backward(dout, cache):
    (N, C, H, W), p = cache
    dx = np.zeros((N, H, W, C), dtype=dout.dtype)
    # The padded channels are constants: their gradient is dropped.
    dx[:, ::2, ::2, :] = to_nhwc(dout)[..., p : p + C]
    return to_nchw(dx)


# ----------------------------------------------------------------------------
# the paper's quantizer, Eqs. (1)–(3), (5): all expansions in two passes
# ----------------------------------------------------------------------------

def ternarize_expansions(latent_weight, delta_factors=q.PAPER_DELTA_LISTS[1], threshold_rule="max",
                         per_channel=False):
    """``tqref.ternary.quantize.ternarize_expansions`` for the paper's rule
    (Δ_k = δ_k · max|W|, one Δ per tensor) in two passes over W: max|W|,
    then every code and every α's sum and count at once
    (``tqref.kernels.quantize``).  Other rules and per-channel thresholds
    run the reference."""
    if threshold_rule != "max" or per_channel or latent_weight.size == 0:
        return q.ternarize_expansions(latent_weight, delta_factors, threshold_rule, per_channel)
    factors = [q.check_delta_factor(d, threshold_rule=threshold_rule) for d in delta_factors]
    codes, deltas, alphas = ternarize_max_rule(latent_weight, factors)
    return [q.Ternarized(codes[k].reshape(latent_weight.shape), float(alphas[k]), float(deltas[k]))
            for k in range(len(factors))]
