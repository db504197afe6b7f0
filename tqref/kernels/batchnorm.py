"""Batch norm (optionally + residual add + ReLU) on a (rows, C) matrix.

A channels-last activation (N, H, W, C) is, in memory, a matrix with one
row per pixel and one column per channel; batch norm's statistics are its
column means and variances.  Each kernel below works on rows [r0, r1) of
that matrix, so ``tqref.kernels.parallel.parallel_for`` can hand each core
its own rows; the per-channel sums of each core go into private arrays that
the caller adds up (no two threads write one element).  The loop over C is
innermost and contiguous: it vectorises.  (The caller may hand in k pixels
per row, (M/k, k·C), with the per-channel vectors tiled k times, so that
this loop is long enough to pay: ``tqref.functional.batchnorm.FOLD_WIDTH``.)

Fusion.  In a residual block the forward pass is

    y = ReLU(BN(x) + residual)        (residual = None for the first BN)

and ``apply`` writes y in one pass, so neither BN(x) nor the sum is ever
stored.  The backward needs only the output y for the ReLU mask
(y > 0 ⇔ pre-activation > 0) and the input x to recompute
x̂ = (x − μ)·inv_std, so the forward does not store x̂ either.

Kernels (float64 accumulators; arrays of the activation's dtype otherwise):

    partial_stats(x, r0, r1, mean, m2)        mean and Σ(x − mean)² of the rows, per channel
    apply(x, res, y, r0, r1, mean, scale, beta, has_res, relu)
                                              y = [ReLU]((x − mean)·scale + β [+ res])
    backward_sums(dout, x, y, r0, r1, mean, inv_std, relu, s_dy, s_dy_xhat)
                                              Σ dy and Σ dy·x̂ with dy = dout·1[y > 0]
    backward_dx(dout, x, y, dx, r0, r1, mean, a, b, e, relu)
                                              dx = a·dy − b − (x − mean)·e
"""

import numba
import numpy as np

# Rows per statistics block: 512 rows × 64 channels × 4 bytes = 128 KB at most,
# so the block's second pass reads from L2.
STATS_BLOCK = 512


@numba.njit(cache=True, nogil=True)
def partial_stats(x, r0, r1, mean, m2):
    """Per-channel mean and M2 = Σ (x − mean)² of rows [r0, r1) of x (M, C).

    Blockwise: the mean and the centred sum of squares of each block of
    rows (two passes over data still in cache), merged into the running
    values with Chan et al.'s parallel formula.  Numerically this is the
    two-pass algorithm (no E[x²] − E[x]² cancellation), at the memory
    cost of one pass."""
    C = x.shape[1]
    bmean = np.empty(C)
    bm2 = np.empty(C)
    for c in range(C):
        mean[c] = 0.0
        m2[c] = 0.0
    n = 0
    for b0 in range(r0, r1, STATS_BLOCK):
        b1 = min(b0 + STATS_BLOCK, r1)
        nb = b1 - b0
        for c in range(C):
            bmean[c] = 0.0
            bm2[c] = 0.0
        for r in range(b0, b1):
            for c in range(C):
                bmean[c] += x[r, c]
        for c in range(C):
            bmean[c] /= nb
        for r in range(b0, b1):
            for c in range(C):
                d = x[r, c] - bmean[c]
                bm2[c] += d * d
        total = n + nb
        for c in range(C):
            delta = bmean[c] - mean[c]
            mean[c] += delta * nb / total
            m2[c] += bm2[c] + delta * delta * (n * nb / total)
        n = total


@numba.njit(cache=True, nogil=True)
def apply(x, res, y, r0, r1, mean, scale, beta, has_res, relu):
    """y = (x − mean)·scale + β (+ res) (then max(·, 0)) for rows [r0, r1),
    scale = γ·inv_std.  (x − mean) first: x·scale − mean·scale would cancel
    in float32 when |mean| ≫ σ."""
    C = x.shape[1]
    zero = y.dtype.type(0)
    for r in range(r0, r1):
        for c in range(C):
            v = (x[r, c] - mean[c]) * scale[c] + beta[c]
            if has_res:
                v += res[r, c]
            if relu and not v > zero:
                v = zero
            y[r, c] = v


@numba.njit(cache=True, nogil=True)
def backward_sums(dout, x, y, r0, r1, mean, inv_std, relu, s_dy, s_dy_xhat):
    """s_dy[c] = Σ dy, s_dy_xhat[c] = Σ dy·x̂ over rows [r0, r1), with
    dy = dout·1[y > 0] when ``relu`` else dout, and x̂ = (x − mean)·inv_std."""
    C = x.shape[1]
    for c in range(C):
        s_dy[c] = 0.0
        s_dy_xhat[c] = 0.0
    for r in range(r0, r1):
        for c in range(C):
            d = dout[r, c]
            if relu and not y[r, c] > 0:
                d = 0
            s_dy[c] += d
            s_dy_xhat[c] += d * (x[r, c] - mean[c])
    for c in range(C):
        s_dy_xhat[c] *= inv_std[c]


@numba.njit(cache=True, nogil=True)
def backward_dx(dout, x, y, dx, dsum, r0, r1, mean, a, b, e, relu, write_dsum):
    """dx = a·dy − b − (x − mean)·e for rows [r0, r1), dy as in backward_sums;
    also dsum = dy when ``write_dsum`` (the gradient of the residual)."""
    C = x.shape[1]
    zero = dx.dtype.type(0)
    for r in range(r0, r1):
        for c in range(C):
            d = dout[r, c]
            if relu and not y[r, c] > 0:
                d = zero
            if write_dsum:
                dsum[r, c] = d
            dx[r, c] = a[c] * d - b[c] - (x[r, c] - mean[c]) * e[c]
