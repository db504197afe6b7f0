"""Convolution on channels-last (NHWC) arrays: per-image columns + BLAS, inside Numba.

What it computes, for x (N, H, W, C), w (F, C, HH, WW), stride s, all
arrays NHWC and C-contiguous:

    out[n, i, j, f] = Σ_{p,q,c} x_pad[n, i·s + p, j·s + q, c] · w[f, c, p, q]

and its gradients, as products of one image's column matrix with the
weights (K = HH·WW·C, column index k = (p·WW + q)·C + c, row index
r = i·W_out + j, so the product's output *is* the NHWC image):

    forward   out[n] = cols(x[n]) @ w_k                       w_k: (K, F)
    dW        dW    += cols(x[n])ᵀ @ dout[n]
    dX, s = 1 dx[n]  = conv(dout[n], w_flip, pad' = k − 1 − pad)    (pad ≤ k − 1)
    dX, s > 1 dx[n]  = col2im(dout[n] @ w_kᵀ)

with w_flip[c, f, p, q] = w[f, c, HH − 1 − p, WW − 1 − q]: for stride 1
the input gradient is itself a convolution, so it reuses the forward
kernel instead of a scatter.

Optimisations (measurements behind them, historical, 2-core machine:
benchmarks/notes/conv_kernels.md):

  - channels-last memory: a patch is HH runs of WW·C contiguous numbers, so
    im2col copies runs instead of gathering single numbers; the public
    arrays keep the NCHW *shape* as the view ``a.transpose(0, 3, 1, 2)``
    (``tqref.kernels.layout``; PyTorch's ``channels_last``)
  - one image's columns at a time (they stay in L2; a batch's are 9× the
    activations), each thread its slice of the batch (``parallel_for``) in
    one Numba call that calls BLAS ``gemm`` (``blas.py``) from inside
  - stride 1: horizontal-only "row columns" (K1 = WW·C), HH products over
    row-shifted slabs added in place (β = 1), instead of a 9× im2col
  - dW: each thread adds into its own dW_t, summed afterwards
  - 3×3 stride-1 convolutions with ≥ ``WINOGRAD_MIN_CHANNELS`` (16) input
    and output channels (forward and both gradients) go to Winograd
    F(2×2, 3×3) (``winograd.py``); the 3-channel first layer and strided
    convolutions stay here

Functions (arrays NHWC, C-contiguous):

    im2col_nhwc(x, n0, n1, HH, WW, stride, pad_h, pad_w)   -> cols (rows, K)
    col2im_nhwc(cols, dx, n0, n1, HH, WW, stride, pad_h, pad_w) -> adds into dx[n0:n1]
    conv_forward_nhwc(x, w, stride, padding)               -> out (N, H_out, W_out, F)
    conv_backward_nhwc(x, w, dout, stride, padding)        -> dx (N, H, W, C), dw (F, C, HH, WW)
    *_naive twins of the first two and of the row columns, with NumPy slicing
"""

import numba
import numpy as np

from tqref.kernels.blas import gemm
from tqref.kernels.parallel import num_threads, parallel_for, scratch
from tqref.kernels.winograd import conv3x3_winograd_nhwc, conv3x3_winograd_weight_grad_nhwc

# 3×3 stride-1 convolutions with at least this many input and output channels
# go to Winograd F(2×2, 3×3) (winograd.py) — forward, input gradient and weight
# gradient: 2.25× fewer multiplications, but transforms that move 4× the data
# through the cache.  Why 16: measured, a whole ResNet-20 training step was
# fastest with 16 (every layer but the first), ahead of 32 and of no Winograd,
# while the 3-channel first layer ran slower by Winograd, which this threshold
# keeps out (benchmarks/notes/conv_kernels.md).  The float32 error is a little
# larger than the direct kernels' (≤ 1e-6 of the output's scale;
# tests/test_winograd.py).  None switches Winograd off.
WINOGRAD_MIN_CHANNELS = 16


def _winograd_pays(HH, WW, C, F, padding):
    return (WINOGRAD_MIN_CHANNELS is not None and HH == 3 and WW == 3 and padding <= 2
            and min(C, F) >= WINOGRAD_MIN_CHANNELS)


def output_size(size, kernel, stride, padding):
    return (size + 2 * padding - kernel) // stride + 1


# ----------------------------------------------------------------------------
# Numba kernels
# ----------------------------------------------------------------------------

@numba.njit(cache=True, nogil=True)
def _im2col_kernel(x, n0, n1, cols, HH, WW, stride, pad_h, pad_w, Ho, Wo):
    """cols[r, (p·WW + q)·C + c] = x_pad[n, i·s + p, j·s + q, c] for n in [n0, n1),
    r = ((n − n0)·Ho + i)·Wo + j.

    Loop order: for one output row (n, i) and one kernel offset (p, q),
    sweep j; the innermost loop copies the C channels of one pixel, which
    are contiguous in x and in the column row.  (Measured: 5× faster than
    walking pixel by pixel with (p, q) inside, whose short runs did not
    vectorise.)
    """
    N, H, W, C = x.shape
    r0 = 0
    for n in range(n0, n1):
        for i in range(Ho):
            for p in range(HH):
                h = i * stride + p - pad_h
                for q in range(WW):
                    k0 = (p * WW + q) * C
                    if h < 0 or h >= H:
                        for j in range(Wo):
                            for c in range(C):
                                cols[r0 + j, k0 + c] = 0
                        continue
                    for j in range(Wo):
                        w = j * stride + q - pad_w
                        if w < 0 or w >= W:
                            for c in range(C):
                                cols[r0 + j, k0 + c] = 0
                        else:
                            for c in range(C):
                                cols[r0 + j, k0 + c] = x[n, h, w, c]
            r0 += Wo


@numba.njit(cache=True, nogil=True)
def _col2im_kernel(cols, dx, n0, n1, HH, WW, stride, pad_h, pad_w, Ho, Wo):
    """dx_pad[n, i·s + p, j·s + q, c] += cols[r, (p·WW + q)·C + c]  (adjoint of im2col).

    dx rows [n0, n1) must arrive zeroed; entries landing in the padding are dropped.
    """
    N, H, W, C = dx.shape
    r0 = 0
    for n in range(n0, n1):
        for i in range(Ho):
            for p in range(HH):
                h = i * stride + p - pad_h
                if h < 0 or h >= H:
                    continue
                for q in range(WW):
                    k0 = (p * WW + q) * C
                    for j in range(Wo):
                        w = j * stride + q - pad_w
                        if w >= 0 and w < W:
                            for c in range(C):
                                dx[n, h, w, c] += cols[r0 + j, k0 + c]
            r0 += Wo


# ----------------------------------------------------------------------------
# Kernel wrappers and their naive twins
# ----------------------------------------------------------------------------

def im2col_nhwc(x, n0, n1, HH, WW, stride, pad_h, pad_w, out=None):
    """Columns of images [n0, n1) of x (N, H, W, C): ((n1 − n0)·H_out·W_out, HH·WW·C)."""
    N, H, W, C = x.shape
    Ho, Wo = output_size(H, HH, stride, pad_h), output_size(W, WW, stride, pad_w)
    if out is None:
        out = np.empty(((n1 - n0) * Ho * Wo, HH * WW * C), dtype=x.dtype)
    _im2col_kernel(x, n0, n1, out, HH, WW, stride, pad_h, pad_w, Ho, Wo)
    return out


def col2im_nhwc(cols, dx, n0, n1, HH, WW, stride, pad_h, pad_w):
    """Add the columns of images [n0, n1) back onto dx (N, H, W, C), in place."""
    N, H, W, C = dx.shape
    Ho, Wo = output_size(H, HH, stride, pad_h), output_size(W, WW, stride, pad_w)
    _col2im_kernel(cols, dx, n0, n1, HH, WW, stride, pad_h, pad_w, Ho, Wo)
    return dx


def im2col_nhwc_naive(x, n0, n1, HH, WW, stride, pad_h, pad_w, out=None):
    """Reference: one strided slice of the padded input per (p, q)."""
    N, H, W, C = x.shape
    s = stride
    Ho, Wo = output_size(H, HH, s, pad_h), output_size(W, WW, s, pad_w)
    xp = np.pad(x[n0:n1], ((0, 0), (pad_h, pad_h), (pad_w, pad_w), (0, 0)))
    cols = np.empty((n1 - n0, Ho, Wo, HH, WW, C), dtype=x.dtype)
    for p in range(HH):
        for q in range(WW):
            cols[:, :, :, p, q, :] = xp[:, p : p + s * Ho : s, q : q + s * Wo : s, :]
    cols = cols.reshape((n1 - n0) * Ho * Wo, HH * WW * C)
    if out is not None:
        out[...] = cols
        return out
    return cols


def col2im_nhwc_naive(cols, dx, n0, n1, HH, WW, stride, pad_h, pad_w):
    """Reference: one strided slice-add into the padded gradient per (p, q)."""
    N, H, W, C = dx.shape
    s = stride
    Ho, Wo = output_size(H, HH, s, pad_h), output_size(W, WW, s, pad_w)
    c6 = cols.reshape(n1 - n0, Ho, Wo, HH, WW, C)
    dxp = np.zeros((n1 - n0, H + 2 * pad_h, W + 2 * pad_w, C), dtype=dx.dtype)
    for p in range(HH):
        for q in range(WW):
            dxp[:, p : p + s * Ho : s, q : q + s * Wo : s, :] += c6[:, :, :, p, q, :]
    dx[n0:n1] += dxp[:, pad_h : pad_h + H, pad_w : pad_w + W, :]
    return dx


def row_cols_nhwc_naive(x, n0, n1, WW, pad_h, pad_w):
    """Reference for the stride-1 row columns (``_row_cols_kernel``):
    out[(hp·B + n − n0)·Wo + j, q·C + c] = x_pad[n, hp, j + q, c]."""
    N, H, W, C = x.shape
    B = n1 - n0
    Wo = W + 2 * pad_w - WW + 1
    xp = np.pad(x[n0:n1], ((0, 0), (pad_h, pad_h), (pad_w, pad_w), (0, 0)))  # (B, Hp, Wp, C)
    cols = np.empty((H + 2 * pad_h, B, Wo, WW, C), dtype=x.dtype)
    for q in range(WW):
        cols[:, :, :, q, :] = xp[:, :, q : q + Wo, :].transpose(1, 0, 2, 3)
    return cols.reshape(-1, WW * C)


# ----------------------------------------------------------------------------
# The convolution
# ----------------------------------------------------------------------------

def weight_matrix(w):
    """w (F, C, HH, WW) -> w_k (HH·WW·C, F), rows in the column order (p, q, c)."""
    F, C, HH, WW = w.shape
    return np.ascontiguousarray(w.transpose(2, 3, 1, 0).reshape(HH * WW * C, F))


def flipped_kernel(w):
    """The kernel of the stride-1 input gradient: w (F, C, HH, WW) ->
    w' (C, F, HH, WW), w'[c, f, p, q] = w[f, c, HH − 1 − p, WW − 1 − q]."""
    return np.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))


# --- stride 1: row-shifted products ------------------------------------------

@numba.njit(cache=True, nogil=True)
def _row_cols_kernel(x, n0, n1, out, WW, pad_h, pad_w, Wo):
    """Horizontal-only columns of images [n0, n1), for a stride-1 convolution:

        out[(hp·B + n − n0)·Wo + j, q·C + c] = x_pad[n, hp, j + q, c]

    for every *padded* row hp in [0, H + 2·pad_h), B = n1 − n0.  Rows are
    ordered (hp, n, j) so that, for kernel row p, the rows needed by all
    outputs (i, n, j) of the block — padded row i + p — form one
    contiguous slab starting at row p·B·Wo.
    """
    N, H, W, C = x.shape
    B = n1 - n0
    for hp in range(H + 2 * pad_h):
        h = hp - pad_h
        for n in range(n0, n1):
            r0 = (hp * B + n - n0) * Wo
            for q in range(WW):
                k0 = q * C
                if h < 0 or h >= H:
                    for j in range(Wo):
                        for c in range(C):
                            out[r0 + j, k0 + c] = 0
                    continue
                for j in range(Wo):
                    w = j + q - pad_w
                    if w < 0 or w >= W:
                        for c in range(C):
                            out[r0 + j, k0 + c] = 0
                    else:
                        for c in range(C):
                            out[r0 + j, k0 + c] = x[n, h, w, c]


@numba.njit(cache=True, nogil=True)
def _stride1_forward_images(x, n0, n1, wk, HH, WW, pad_h, pad_w, X, out):
    """out[n] = Σ_p X_p @ w_p for the images n in [n0, n1) (one thread's share).

    x (N, H, W, C), w_k (HH·WW·C, F) with rows (p, q, c), out (N, Ho, Wo, F);
    X is scratch for one image's row columns ((H + 2·pad_h)·Wo, K1 = WW·C).
    For kernel row p the rows of X that the outputs (i, j) need — padded
    row i + p, shifted by q — are the contiguous slab X_p = X[p·Wo : p·Wo +
    Ho·Wo], so the convolution is HH products with K1 = WW·C instead of one
    with K = HH·WW·C: the columns are HH times smaller to build, and the
    products add straight into out[n] (β = 1), which is already NHWC.
    """
    R, F = out.shape[1] * out.shape[2], out.shape[3]
    Wo = out.shape[2]
    K1 = X.shape[1]
    for n in range(n0, n1):
        _row_cols_kernel(x, n, n + 1, X, WW, pad_h, pad_w, Wo)
        o = out[n].reshape(R, F)
        for p in range(HH):
            gemm(X[p * Wo : p * Wo + R], wk[p * K1 : (p + 1) * K1], o, 0.0 if p == 0 else 1.0)


@numba.njit(cache=True, nogil=True)
def _stride1_weight_grad_images(x, dout, n0, n1, WW, pad_h, pad_w, X, dwk):
    """dw_k[p·K1 : (p + 1)·K1] += X_pᵀ @ dout[n] for n in [n0, n1): the
    adjoint of ``_stride1_forward_images`` with respect to w_k (HH·WW·C, F)."""
    R, F = dout.shape[1] * dout.shape[2], dout.shape[3]
    Wo = dout.shape[2]
    K1 = X.shape[1]
    for n in range(n0, n1):
        _row_cols_kernel(x, n, n + 1, X, WW, pad_h, pad_w, Wo)
        d = dout[n].reshape(R, F)
        for p in range(dwk.shape[0] // K1):
            gemm(X[p * Wo : p * Wo + R], d, dwk[p * K1 : (p + 1) * K1], 1.0, True, False)


def _stride1_forward(x, w, pad_h, pad_w):
    """Stride-1 convolution of x (N, H, W, C) with w (F, C, HH, WW): by
    Winograd where it pays, else HH row-column products per image."""
    N, H, W, C = x.shape
    F, _, HH, WW = w.shape
    w = w.astype(x.dtype, copy=False)
    if pad_h == pad_w and _winograd_pays(HH, WW, C, F, pad_h):
        return conv3x3_winograd_nhwc(x, w, pad_h)
    wk = weight_matrix(w)
    Ho, Wo = H + 2 * pad_h - HH + 1, W + 2 * pad_w - WW + 1
    out = np.empty((N, Ho, Wo, F), dtype=x.dtype)

    def work(t, n0, n1):
        X = scratch(t, "cols", (H + 2 * pad_h) * Wo * WW * C, x.dtype).reshape(-1, WW * C)
        _stride1_forward_images(x, n0, n1, wk, HH, WW, pad_h, pad_w, X, out)

    parallel_for(work, N)
    return out


def _stride1_weight_grad(x, dout, HH, WW, padding):
    """dw (F, C, HH, WW) of a stride-1 convolution: by Winograd where it pays,
    else per thread Σ_n X_pᵀ @ dout[n] into its own dw_t, summed afterwards."""
    N, H, W, C = x.shape
    Wo, F = dout.shape[2], dout.shape[3]
    if _winograd_pays(HH, WW, C, F, padding):
        return conv3x3_winograd_weight_grad_nhwc(x, dout, padding)
    partial_dw = np.zeros((num_threads(), HH * WW * C, F), dtype=x.dtype)

    def work(t, n0, n1):
        X = scratch(t, "cols", (H + 2 * padding) * Wo * WW * C, x.dtype).reshape(-1, WW * C)
        _stride1_weight_grad_images(x, dout, n0, n1, WW, padding, padding, X, partial_dw[t])

    parallel_for(work, N)
    return _weight_from_matrix(partial_dw.sum(axis=0), HH, WW, C, F)


def _weight_from_matrix(dwk, HH, WW, C, F):
    """dw_k (HH·WW·C, F), rows (p, q, c) -> dw (F, C, HH, WW): weight_matrix's inverse."""
    return np.ascontiguousarray(dwk.reshape(HH, WW, C, F).transpose(3, 2, 0, 1))


# --- any stride: full im2col -------------------------------------------------

@numba.njit(cache=True, nogil=True)
def _im2col_forward_images(x, n0, n1, wk, HH, WW, stride, pad_h, pad_w, cols, out):
    """out[n] = im2col(x[n]) @ w_k for n in [n0, n1); cols: scratch (Ho·Wo, K)."""
    Ho, Wo, F = out.shape[1], out.shape[2], out.shape[3]
    for n in range(n0, n1):
        _im2col_kernel(x, n, n + 1, cols, HH, WW, stride, pad_h, pad_w, Ho, Wo)
        gemm(cols, wk, out[n].reshape(Ho * Wo, F))


@numba.njit(cache=True, nogil=True)
def _im2col_backward_images(x, dout, n0, n1, wk, HH, WW, stride, pad_h, pad_w, cols, dwk, dx):
    """For n in [n0, n1):  dw_k += im2col(x[n])ᵀ @ dout[n]  and, if dx has
    images (it is (0, ...) when not needed), dx[n] = col2im(dout[n] @ w_kᵀ);
    dx[n] must arrive zeroed."""
    Ho, Wo, F = dout.shape[1], dout.shape[2], dout.shape[3]
    for n in range(n0, n1):
        _im2col_kernel(x, n, n + 1, cols, HH, WW, stride, pad_h, pad_w, Ho, Wo)
        d = dout[n].reshape(Ho * Wo, F)
        gemm(cols, d, dwk, 1.0, True, False)
        if dx.shape[0] > 0:
            gemm(d, wk, cols, 0.0, False, True)
            _col2im_kernel(cols, dx, n, n + 1, HH, WW, stride, pad_h, pad_w, Ho, Wo)


def conv_forward_nhwc(x, w, stride, padding):
    """x (N, H, W, C) C-contiguous, w (F, C, HH, WW) -> out (N, H_out, W_out, F)."""
    N, H, W, C = x.shape
    F, _, HH, WW = w.shape
    if stride == 1:
        return _stride1_forward(x, w, padding, padding)
    wk = weight_matrix(w).astype(x.dtype, copy=False)
    Ho, Wo = output_size(H, HH, stride, padding), output_size(W, WW, stride, padding)
    out = np.empty((N, Ho, Wo, F), dtype=x.dtype)

    def work(t, n0, n1):
        cols = scratch(t, "cols", Ho * Wo * HH * WW * C, x.dtype).reshape(Ho * Wo, -1)
        _im2col_forward_images(x, n0, n1, wk, HH, WW, stride, padding, padding, cols, out)

    parallel_for(work, N)
    return out


def conv_backward_nhwc(x, w, dout, stride, padding, need_dx=True):
    """x (N, H, W, C), w (F, C, HH, WW), dout (N, H_out, W_out, F), all
    C-contiguous -> (dx (N, H, W, C) or None, dw (F, C, HH, WW)).

    Each thread adds its images' weight gradient into its own dw_t; the
    partial sums are added afterwards (no two threads write one element)."""
    N, H, W, C = x.shape
    F, _, HH, WW = w.shape
    if stride == 1 and padding <= HH - 1 and padding <= WW - 1:
        # The input gradient is itself a stride-1 convolution: of dout with the
        # kernel flipped in space and transposed in (f, c), padded by k − 1 − pad.
        dw = _stride1_weight_grad(x, dout, HH, WW, padding)
        dx = _stride1_forward(dout, flipped_kernel(w), HH - 1 - padding, WW - 1 - padding) if need_dx else None
        return dx, dw
    # any stride: im2col, and the input gradient scattered back by col2im
    Ho, Wo = dout.shape[1], dout.shape[2]
    wk = weight_matrix(w).astype(x.dtype, copy=False)
    partial_dw = np.zeros((num_threads(), HH * WW * C, F), dtype=x.dtype)
    dx = np.zeros((N, H, W, C) if need_dx else (0, H, W, C), dtype=x.dtype)

    def work(t, n0, n1):
        cols = scratch(t, "cols", Ho * Wo * HH * WW * C, x.dtype).reshape(Ho * Wo, -1)
        _im2col_backward_images(x, dout, n0, n1, wk, HH, WW, stride, padding, padding,
                                cols, partial_dw[t], dx)

    parallel_for(work, N)
    return (dx if need_dx else None), _weight_from_matrix(partial_dw.sum(axis=0), HH, WW, C, F)
