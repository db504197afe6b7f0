"""2-D convolution (cross-correlation, as in every deep-learning library), NCHW.

    x: (N, C, H, W)   w: (F, C, HH, WW)   b: (F,) or None
    out: (N, F, H_out, W_out),  H_out = (H + 2·pad − HH) // s + 1  (floor, as PyTorch)

Forward, with x_pad = x zero-padded by ``pad`` on each spatial side:

    out[n, f, i, j] = b[f] + Σ_c Σ_p Σ_q x_pad[n, c, i·s + p, j·s + q] · w[f, c, p, q]

Backward, given dout = ∂L/∂out (each input pixel receives from every output
pixel whose window covers it, hence the ``+=``):

    dx_pad[n, c, i·s + p, j·s + q] += Σ_f dout[n, f, i, j] · w[f, c, p, q]
    dx = dx_pad without its padding border
    dw[f, c, p, q] = Σ_n Σ_i Σ_j dout[n, f, i, j] · x_pad[n, c, i·s + p, j·s + q]
    db[f]          = Σ_n Σ_i Σ_j dout[n, f, i, j]

Three tiers with one signature (``tqref.backend``):

* ``conv2d_forward_naive`` / ``conv2d_backward_naive``: Python loops over
  (n, f, i, j), one window at a time; the formula above, line for line.
  Too slow to train; the tests hold the other two to it.
* ``conv2d_forward`` / ``conv2d_backward`` (the **reference** backend):
  im2col from a strided view of x_pad (no gather loop), one matrix product
  forward, and backward one for dw and one per kernel offset for dx
  (col2im as HH·WW strided additions).  Plain NCHW NumPy.
* the **fast** backend's pair in ``tqref.kernels.ops``: channels-last,
  per-image columns that stay in cache, Winograd F(2×2, 3×3) for 3×3 stride-1
  layers with ≥ 16 channels, both cores.

Only cheap shape/dtype checks are made here; scanning for NaN/inf is left
to the layers (``tqref.nn``), which do it once per input.
"""

import numpy as np

from tqref.validation import FLOAT_DTYPES, check_nonnegative_int, check_positive_int


def conv_output_size(size, kernel, stride, padding):
    """Output length along one axis: (size + 2·padding − kernel) // stride + 1.

    Floor division, as PyTorch: input pixels that do not fill a last window
    are ignored.  The result is < 1 when the kernel does not fit the padded
    input; callers check that.
    """
    return (size + 2 * padding - kernel) // stride + 1


def check_inputs(x, w, b, stride, padding, who="conv2d"):
    """Validate the arguments of a forward call; return (stride, padding, H_out, W_out).
    (Both backends call it: an error reads the same whichever runs.)"""
    for name, a in (("x", x), ("w", w)):
        if not isinstance(a, np.ndarray):
            raise TypeError(f"{who}: {name}: expected a numpy.ndarray, got {type(a).__name__}")
        if a.dtype not in FLOAT_DTYPES:
            raise TypeError(f"{who}: {name}: expected dtype float32 or float64, got {a.dtype}")
    if x.ndim != 4:
        raise ValueError(
            f"{who}: x: expected a 4-D array (N, C, H, W), got {x.ndim}-D array of shape {x.shape}"
        )
    if w.ndim != 4:
        raise ValueError(
            f"{who}: w: expected a 4-D array (F, C, HH, WW), got {w.ndim}-D array of shape {w.shape}"
        )
    if x.shape[1] != w.shape[1]:
        raise ValueError(
            f"{who}: x has {x.shape[1]} channels (shape {x.shape}) but w expects "
            f"{w.shape[1]} (shape {w.shape}); x.shape[1] must equal w.shape[1]"
        )
    if x.dtype != w.dtype:
        raise TypeError(
            f"{who}: x and w must have the same dtype, got x {x.dtype} and w {w.dtype}"
        )
    if b is not None:
        if not isinstance(b, np.ndarray):
            raise TypeError(f"{who}: b: expected a numpy.ndarray or None, got {type(b).__name__}")
        if b.shape != (w.shape[0],):
            raise ValueError(
                f"{who}: b: expected shape ({w.shape[0]},) (one per filter of w {w.shape}), got {b.shape}"
            )
        if b.dtype != x.dtype:
            raise TypeError(f"{who}: b: expected dtype {x.dtype} (the dtype of x), got {b.dtype}")
    stride = check_positive_int(stride, f"{who}: stride")
    padding = check_nonnegative_int(padding, f"{who}: padding")
    H, W = x.shape[2:]
    HH, WW = w.shape[2:]
    H_out = conv_output_size(H, HH, stride, padding)
    W_out = conv_output_size(W, WW, stride, padding)
    if H_out < 1 or W_out < 1:
        raise ValueError(
            f"{who}: kernel ({HH}, {WW}) of w {w.shape} is larger than the padded input "
            f"({H + 2 * padding}, {W + 2 * padding}) (x {x.shape}, padding {padding}); "
            f"output would be ({H_out}, {W_out})"
        )
    return stride, padding, H_out, W_out


def check_dout(dout, out_shape, dtype, who):
    if not isinstance(dout, np.ndarray):
        raise TypeError(f"{who}: dout: expected a numpy.ndarray, got {type(dout).__name__}")
    if dout.shape != out_shape:
        raise ValueError(f"{who}: dout: expected shape {out_shape} (the forward output), got {dout.shape}")
    if dout.dtype != dtype:
        raise TypeError(f"{who}: dout: expected dtype {dtype} (the forward's dtype), got {dout.dtype}")


# ----------------------------------------------------------------------------
# Naive: one window at a time
# ----------------------------------------------------------------------------

def conv2d_forward_naive(x, w, b=None, stride=1, padding=0):
    """x: (N, C, H, W), w: (F, C, HH, WW), b: (F,) or None -> out: (N, F, H_out, W_out).

        out[n, f, i, j] = b[f] + Σ_c Σ_p Σ_q x_pad[n, c, i·s + p, j·s + q] · w[f, c, p, q]

    cache = (x, w, b, stride, padding)
    """
    stride, padding, H_out, W_out = check_inputs(x, w, b, stride, padding)
    ### BEGIN SOLUTION
    N = x.shape[0]
    F, _, HH, WW = w.shape
    s = stride
    x_pad = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    out = np.empty((N, F, H_out, W_out), dtype=x.dtype)
    for n in range(N):
        for f in range(F):
            for i in range(H_out):
                for j in range(W_out):
                    window = x_pad[n, :, i * s : i * s + HH, j * s : j * s + WW]  # (C, HH, WW)
                    out[n, f, i, j] = np.sum(window * w[f]) + (b[f] if b is not None else 0)
    return out, (x, w, b, stride, padding)
    ### END SOLUTION


def conv2d_backward_naive(dout, cache):
    """dout: (N, F, H_out, W_out) -> dx: (N, C, H, W), dw: (F, C, HH, WW), db: (F,) or None.

        dx_pad[n, c, i·s + p, j·s + q] += dout[n, f, i, j] · w[f, c, p, q]
        dw[f, c, p, q]                 += dout[n, f, i, j] · x_pad[n, c, i·s + p, j·s + q]
        db[f]                          += dout[n, f, i, j]

    for every (n, f, i, j): each output pixel hands its gradient back to the
    window it was computed from.
    """
    x, w, b, s, padding = cache
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    H_out = conv_output_size(H, HH, s, padding)
    W_out = conv_output_size(W, WW, s, padding)
    check_dout(dout, (N, F, H_out, W_out), x.dtype, "conv2d_backward_naive")
    ### BEGIN SOLUTION
    x_pad = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    dx_pad = np.zeros_like(x_pad)
    dw = np.zeros_like(w)
    db = np.zeros(F, dtype=x.dtype) if b is not None else None
    for n in range(N):
        for f in range(F):
            for i in range(H_out):
                for j in range(W_out):
                    g = dout[n, f, i, j]
                    dx_pad[n, :, i * s : i * s + HH, j * s : j * s + WW] += g * w[f]
                    dw[f] += g * x_pad[n, :, i * s : i * s + HH, j * s : j * s + WW]
                    if db is not None:
                        db[f] += g
    dx = dx_pad[:, :, padding : padding + H, padding : padding + W].copy()
    return dx, dw, db
    ### END SOLUTION


# ----------------------------------------------------------------------------
# Reference: im2col as a strided view + one matrix product (the reference backend)
# ----------------------------------------------------------------------------

def _windows(x_pad, HH, WW, stride):
    """The receptive fields of x_pad (N, C, Hp, Wp) as a view
    (N, C, H_out, W_out, HH, WW): windows[n, c, i, j, p, q] = x_pad[n, c, i·s + p, j·s + q].
    No copy: a strided view of x_pad's memory (the im2col matrix before reshaping)."""
    ### BEGIN SOLUTION
    view = np.lib.stride_tricks.sliding_window_view(x_pad, (HH, WW), axis=(2, 3))
    return view[:, :, ::stride, ::stride]
    ### END SOLUTION


def conv2d_forward(x, w, b=None, stride=1, padding=0):
    """x: (N, C, H, W), w: (F, C, HH, WW), b: (F,) or None -> out: (N, F, H_out, W_out).

    im2col: one row per output pixel (n, i, j) holding its window, one
    column per (c, p, q); the convolution is then one matrix product

        cols[(n, i, j), (c, p, q)] = x_pad[n, c, i·s + p, j·s + q]
        out[(n, i, j), f]          = Σ_{c,p,q} cols[(n, i, j), (c, p, q)] · w[f, c, p, q] + b[f]

    cache = (x.shape, cols, w, has_bias, stride, padding): the backward
    needs the windows again for dw, so they are kept (CS231n's im2col layer
    does the same; it costs 9 activations of memory for a 3×3 layer).
    """
    stride, padding, H_out, W_out = check_inputs(x, w, b, stride, padding)
    ### BEGIN SOLUTION
    N, C = x.shape[:2]
    F, _, HH, WW = w.shape
    x_pad = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    windows = _windows(x_pad, HH, WW, stride)                       # (N, C, H_out, W_out, HH, WW), a view
    cols = windows.transpose(0, 2, 3, 1, 4, 5).reshape(N * H_out * W_out, C * HH * WW)  # the copy
    out = cols @ w.reshape(F, -1).T                                 # (N·H_out·W_out, F)
    if b is not None:
        out += b
    out = out.reshape(N, H_out, W_out, F).transpose(0, 3, 1, 2)
    return np.ascontiguousarray(out), (x.shape, cols, w, b is not None, stride, padding)
    ### END SOLUTION


def conv2d_backward(dout, cache):
    """dout: (N, F, H_out, W_out) -> dx: (N, C, H, W), dw: (F, C, HH, WW), db: (F,) or None.

    With dout as rows like the forward's cols, dout_rows[(n, i, j), f]:

        dw[f, (c, p, q)]                = Σ_{n,i,j} dout_rows[(n, i, j), f] · cols[(n, i, j), (c, p, q)]
        dx_pad[n, c, i·s + p, j·s + q] += Σ_f dout[n, f, i, j] · w[f, c, p, q]      for each (p, q)
        db[f]                           = Σ_{n,i,j} dout[n, f, i, j]

    dw is one matrix product; dx is one product per kernel offset (p, q),
    added into the strided slice of dx_pad that offset touched (windows
    overlap, hence ``+=``: col2im).
    """
    x_shape, cols, w, has_bias, s, padding = cache
    N, C, H, W = x_shape
    F, _, HH, WW = w.shape
    H_out = conv_output_size(H, HH, s, padding)
    W_out = conv_output_size(W, WW, s, padding)
    check_dout(dout, (N, F, H_out, W_out), w.dtype, "conv2d_backward")
    ### BEGIN SOLUTION
    dout_nhwc = np.ascontiguousarray(dout.transpose(0, 2, 3, 1))    # (N, H_out, W_out, F)
    dw = (dout_nhwc.reshape(-1, F).T @ cols).reshape(w.shape)
    dx_pad = np.zeros((N, C, H + 2 * padding, W + 2 * padding), dtype=w.dtype)
    for p in range(HH):
        for q in range(WW):
            dx_pad[:, :, p : p + s * H_out : s, q : q + s * W_out : s] += \
                (dout_nhwc @ w[:, :, p, q]).transpose(0, 3, 1, 2)    # (N, C, H_out, W_out)
    dx = np.ascontiguousarray(dx_pad[:, :, padding : padding + H, padding : padding + W])
    db = dout.sum(axis=(0, 2, 3)) if has_bias else None
    return dx, dw, db
    ### END SOLUTION
