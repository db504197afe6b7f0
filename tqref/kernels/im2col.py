"""im2col / col2im: turn a convolution into a matrix product.

A convolution reads, for every output pixel (i, j), a C×HH×WW patch of the
(zero-padded) input.  ``im2col`` copies every patch into one column of a
matrix, after which the convolution is a single matrix product with the
filters flattened to rows.  ``col2im`` is its adjoint: it adds every column
back onto the patch it came from (patches overlap when stride < kernel, so
the scatter *adds*).

Column layout
-------------
    cols: (N, K, L)   K = C·HH·WW,  L = H_out·W_out
    cols[n, k, l] = x_pad[n, c, i·s + p, j·s + q]
        with  k = (c·HH + p)·WW + q   (the order of w[f].reshape(-1))
              l = i·W_out + j         (the order of out[n, f].reshape(-1))

Why this layout: with ``w2 = w.reshape(F, K)`` the forward is
``out[n] = w2 @ cols[n]``, an (F, K)·(K, L) product whose (F, L) result is
already ``out[n, f, i, j]`` in NCHW order, so no transpose copy follows the
GEMM; in the backward ``dout[n]`` (F, L) is likewise a contiguous operand.
The batch axis comes first, so each ``prange`` iteration writes one
contiguous, private block ``cols[n]`` (or ``dx[n]``): no two threads ever
touch the same element, and no atomics or reductions are needed.

Padding is handled inside the kernels (out-of-range reads give 0,
out-of-range writes are dropped) rather than by materialising ``np.pad(x)``:
that saves one full copy of the input in the forward and one of ``dx`` in
the backward.

Functions (fast and naive twins have the same signature)
---------
im2col(x, HH, WW, stride, padding)               -> cols (N, C·HH·WW, H_out·W_out)
col2im(cols, x_shape, HH, WW, stride, padding)   -> dx   x_shape = (N, C, H, W)
im2col_naive, col2im_naive                       NumPy-slicing references
"""

import numba
import numpy as np


def _output_size(size, kernel, stride, padding):
    # Same formula as tqref.functional.conv.conv_output_size; repeated here
    # because kernels/ sits below functional/ and must not import from it.
    return (size + 2 * padding - kernel) // stride + 1


def _shapes(x_shape, HH, WW, stride, padding):
    N, C, H, W = x_shape
    H_out = _output_size(H, HH, stride, padding)
    W_out = _output_size(W, WW, stride, padding)
    if H_out < 1 or W_out < 1:
        raise ValueError(
            f"im2col: kernel ({HH}, {WW}) does not fit the padded input "
            f"({H + 2 * padding}, {W + 2 * padding}) (input {tuple(x_shape)}, padding {padding})"
        )
    return N, C, H, W, H_out, W_out


# ----------------------------------------------------------------------------
# Numba kernels
# ----------------------------------------------------------------------------

@numba.njit(cache=True, parallel=True)
def _im2col_kernel(x, cols, HH, WW, stride, padding, H_out, W_out):
    """cols[n, (c·HH + p)·WW + q, i·W_out + j] = x_pad[n, c, i·s + p, j·s + q]."""
    N, C, H, W = x.shape
    for n in numba.prange(N):  # each n writes only cols[n]
        for c in range(C):
            for p in range(HH):
                for q in range(WW):
                    k = (c * HH + p) * WW + q
                    for i in range(H_out):
                        h = i * stride + p - padding
                        row = i * W_out
                        if h < 0 or h >= H:
                            for j in range(W_out):
                                cols[n, k, row + j] = 0
                        else:
                            for j in range(W_out):
                                col = j * stride + q - padding
                                if col < 0 or col >= W:
                                    cols[n, k, row + j] = 0
                                else:
                                    cols[n, k, row + j] = x[n, c, h, col]


@numba.njit(cache=True, parallel=True)
def _col2im_kernel(cols, dx, HH, WW, stride, padding, H_out, W_out):
    """dx_pad[n, c, i·s + p, j·s + q] += cols[n, (c·HH + p)·WW + q, i·W_out + j].

    ``dx`` must arrive zeroed.  Entries that land in the padding are dropped:
    the padding is a constant, it has no gradient.
    """
    N, C, H, W = dx.shape
    for n in numba.prange(N):  # each n writes only dx[n]: the += never races
        for c in range(C):
            for p in range(HH):
                for q in range(WW):
                    k = (c * HH + p) * WW + q
                    for i in range(H_out):
                        h = i * stride + p - padding
                        if h < 0 or h >= H:
                            continue
                        row = i * W_out
                        for j in range(W_out):
                            col = j * stride + q - padding
                            if col >= 0 and col < W:
                                dx[n, c, h, col] += cols[n, k, row + j]


# ----------------------------------------------------------------------------
# Public functions
# ----------------------------------------------------------------------------

# Below this many column entries a kernel runs on the calling thread alone.
# Waking the thread pool costs a few µs on an idle machine, but when the
# cores are oversubscribed (tests running side by side, BLAS threads still
# spinning) a parallel region waits for descheduled workers: we measured
# 0.2–5 ms per call on a 2-core machine, against 2 µs serially, for the tiny
# arrays of a numeric gradient check, which makes thousands of such calls.
_PARALLEL_MIN_ENTRIES = 1 << 16


def _launch(kernel, n_entries, batch, *args):
    """Call ``kernel(*args)``, on one thread when the work is small or the
    batch (the ``prange`` axis) has a single image."""
    if n_entries >= _PARALLEL_MIN_ENTRIES and batch > 1:
        kernel(*args)
        return
    previous = numba.get_num_threads()
    numba.set_num_threads(1)  # thread-local: other threads are unaffected
    try:
        kernel(*args)
    finally:
        numba.set_num_threads(previous)


def im2col(x, HH, WW, stride, padding):
    """Gather every (HH, WW) patch of the zero-padded input into a column.

    x: (N, C, H, W) -> cols: (N, C·HH·WW, H_out·W_out), dtype of x

        cols[n, (c·HH + p)·WW + q, i·W_out + j] = x_pad[n, c, i·s + p, j·s + q]
    """
    N, C, H, W, H_out, W_out = _shapes(x.shape, HH, WW, stride, padding)
    cols = np.empty((N, C * HH * WW, H_out * W_out), dtype=x.dtype)
    # A contiguous x keeps the inner loop's reads unit-stride (for stride 1)
    # and lets Numba reuse one compiled specialisation.
    _launch(_im2col_kernel, cols.size, N,
            np.ascontiguousarray(x), cols, HH, WW, stride, padding, H_out, W_out)
    return cols


def col2im(cols, x_shape, HH, WW, stride, padding):
    """Scatter-add columns back onto the patches they came from (adjoint of im2col).

    cols: (N, C·HH·WW, H_out·W_out) -> dx: x_shape = (N, C, H, W), dtype of cols

        dx_pad[n, c, i·s + p, j·s + q] += cols[n, (c·HH + p)·WW + q, i·W_out + j]
        dx = dx_pad without its padding border
    """
    N, C, H, W, H_out, W_out = _shapes(x_shape, HH, WW, stride, padding)
    _check_cols_shape(cols, N, C * HH * WW, H_out * W_out)
    dx = np.zeros((N, C, H, W), dtype=cols.dtype)
    _launch(_col2im_kernel, cols.size, N,
            np.ascontiguousarray(cols), dx, HH, WW, stride, padding, H_out, W_out)
    return dx


def _check_cols_shape(cols, N, K, L):
    if cols.shape != (N, K, L):
        raise ValueError(f"col2im: cols: expected shape {(N, K, L)}, got {cols.shape}")


# ----------------------------------------------------------------------------
# Naive twins: the same maps written with NumPy slicing.  For a fixed kernel
# offset (p, q), the input pixels read by all output pixels (i, j) form one
# strided slice x_pad[:, :, p : p + s·H_out : s, q : q + s·W_out : s].
# ----------------------------------------------------------------------------

def im2col_naive(x, HH, WW, stride, padding):
    """Reference im2col: one strided slice of the padded input per (p, q)."""
    N, C, H, W, H_out, W_out = _shapes(x.shape, HH, WW, stride, padding)
    s = stride
    x_pad = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    cols = np.empty((N, C, HH, WW, H_out, W_out), dtype=x.dtype)
    for p in range(HH):
        for q in range(WW):
            cols[:, :, p, q] = x_pad[:, :, p : p + s * H_out : s, q : q + s * W_out : s]
    return cols.reshape(N, C * HH * WW, H_out * W_out)


def col2im_naive(cols, x_shape, HH, WW, stride, padding):
    """Reference col2im: one strided slice-add into the padded gradient per (p, q).

    Within one (p, q) the slice hits distinct pixels, so ``+=`` on the slice
    is exact; overlaps only occur across different (p, q).
    """
    N, C, H, W, H_out, W_out = _shapes(x_shape, HH, WW, stride, padding)
    _check_cols_shape(cols, N, C * HH * WW, H_out * W_out)
    s = stride
    cols6 = cols.reshape(N, C, HH, WW, H_out, W_out)
    dx_pad = np.zeros((N, C, H + 2 * padding, W + 2 * padding), dtype=cols.dtype)
    for p in range(HH):
        for q in range(WW):
            dx_pad[:, :, p : p + s * H_out : s, q : q + s * W_out : s] += cols6[:, :, p, q]
    return dx_pad[:, :, padding : padding + H, padding : padding + W].copy()
