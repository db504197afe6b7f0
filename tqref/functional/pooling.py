"""Pooling: global average pooling and 2×2 max pooling (stride 2).

Global average pooling, x (N, C, H, W) -> out (N, C):

    out[n, c] = (1/(H·W)) Σ_{i,j} x[n, c, i, j]
    dx[n, c, i, j] = dout[n, c] / (H·W)

Cache: ``(x.shape, x.dtype)``; the backward needs nothing of x's values.

Max pooling over 2×2 windows with stride 2, x (N, C, H, W) -> out
(N, C, H//2, W//2).  Odd sizes floor as in PyTorch: the last row (column)
of an odd H (W) belongs to no window and receives zero gradient.

    out[n, c, i, j] = max_{a, b ∈ {0, 1}} x[n, c, 2i + a, 2j + b]
    dx[n, c, 2i + a*, 2j + b*] = dout[n, c, i, j]    at the arg-max (a*, b*),
    dx = 0 everywhere else

The max is not differentiable at ties; we route the gradient to the first
maximum in row-major window order (0,0), (0,1), (1,0), (1,1), like
``np.argmax``.  Cache: ``(argmax (N, C, H//2, W//2) uint8 with values
2·a* + b*, x.shape)`` — the same for the loops and the reference version
(which the fast backend shares).
"""

import numpy as np

from ..validation import check_array

# ----------------------------------------------------------------------------
# global average pooling
# ----------------------------------------------------------------------------

def check_gap_input(fn, x):
    check_array(x, f"{fn}: x", ndim=4, finite=False)
    if x.shape[2] == 0 or x.shape[3] == 0:
        raise ValueError(f"{fn}: x: expected H ≥ 1 and W ≥ 1, got shape {x.shape}")


def global_avg_pool_forward_naive(x):
    """Loop version of :func:`global_avg_pool_forward`."""
    check_gap_input("global_avg_pool_forward_naive", x)
    N, C, H, W = x.shape
    out = np.empty((N, C), dtype=x.dtype)
    for n in range(N):
        for c in range(C):
            s = 0.0
            for i in range(H):
                for j in range(W):
                    s += float(x[n, c, i, j])
            out[n, c] = s / (H * W)
    return out, (x.shape, x.dtype)


def global_avg_pool_backward_naive(dout, cache):
    """Loop version of :func:`global_avg_pool_backward`."""
    (N, C, H, W), dtype = cache
    dx = np.empty((N, C, H, W), dtype=dtype)
    for n in range(N):
        for c in range(C):
            g = float(dout[n, c]) / (H * W)
            for i in range(H):
                for j in range(W):
                    dx[n, c, i, j] = g
    return dx


def global_avg_pool_forward(x):
    """x (N, C, H, W) -> (out (N, C), cache = (x.shape, x.dtype))."""
    check_gap_input("global_avg_pool_forward", x)
    return x.mean(axis=(2, 3)), (x.shape, x.dtype)


def global_avg_pool_backward(dout, cache):
    """dout (N, C) -> dx (N, C, H, W): every pixel gets dout / (H·W)."""
    (N, C, H, W), dtype = cache
    dx = np.empty((N, C, H, W), dtype=dtype)
    # Assign instead of returning np.broadcast_to: callers may write into dx.
    dx[...] = (dout / (H * W))[:, :, None, None]
    return dx


# ----------------------------------------------------------------------------
# 2×2 max pooling, stride 2
# ----------------------------------------------------------------------------

def check_maxpool_input(fn, x):
    check_array(x, f"{fn}: x", ndim=4, finite=False)
    if x.shape[2] < 2 or x.shape[3] < 2:
        raise ValueError(f"{fn}: x: expected H ≥ 2 and W ≥ 2 for a 2×2 window, got shape {x.shape}")


def max_pool2x2_forward_naive(x):
    """Loop version of :func:`max_pool2x2_forward`."""
    check_maxpool_input("max_pool2x2_forward_naive", x)
    N, C, H, W = x.shape
    Ho, Wo = H // 2, W // 2
    out = np.empty((N, C, Ho, Wo), dtype=x.dtype)
    argmax = np.empty((N, C, Ho, Wo), dtype=np.uint8)
    for n in range(N):
        for c in range(C):
            for i in range(Ho):
                for j in range(Wo):
                    best, best_k = x[n, c, 2 * i, 2 * j], 0
                    for a in range(2):
                        for b in range(2):
                            v = x[n, c, 2 * i + a, 2 * j + b]
                            if v > best:  # strict: a tie keeps the earlier position
                                best, best_k = v, 2 * a + b
                    out[n, c, i, j] = best
                    argmax[n, c, i, j] = best_k
    return out, (argmax, x.shape)


def max_pool2x2_backward_naive(dout, cache):
    """Loop version of :func:`max_pool2x2_backward`."""
    argmax, shape = cache
    N, C, Ho, Wo = argmax.shape
    dx = np.zeros(shape, dtype=dout.dtype)
    for n in range(N):
        for c in range(C):
            for i in range(Ho):
                for j in range(Wo):
                    a, b = divmod(int(argmax[n, c, i, j]), 2)
                    dx[n, c, 2 * i + a, 2 * j + b] = dout[n, c, i, j]
    return dx


def _windows(x):
    """View the cropped x as (N, C, Ho, Wo, 4), the last axis being the 2×2
    window in row-major order."""
    N, C, H, W = x.shape
    Ho, Wo = H // 2, W // 2
    xc = x[:, :, : 2 * Ho, : 2 * Wo]
    return xc.reshape(N, C, Ho, 2, Wo, 2).transpose(0, 1, 2, 4, 3, 5).reshape(N, C, Ho, Wo, 4)


def max_pool2x2_forward(x):
    """x (N, C, H, W) -> (out (N, C, H//2, W//2), cache = (argmax, x.shape))."""
    check_maxpool_input("max_pool2x2_forward", x)
    win = _windows(x)
    # np.argmax returns the first maximum: the tie rule of the docstring.
    argmax = np.argmax(win, axis=-1).astype(np.uint8)
    out = np.take_along_axis(win, argmax[..., None].astype(np.intp), axis=-1)[..., 0]
    return out, (argmax, x.shape)


def max_pool2x2_backward(dout, cache):
    """dout (N, C, H//2, W//2) -> dx (N, C, H, W): each dout goes to its
    window's arg-max, zeros elsewhere (including an odd trailing row/column)."""
    argmax, shape = cache
    N, C, H, W = shape
    Ho, Wo = H // 2, W // 2
    dwin = np.zeros((N, C, Ho, Wo, 4), dtype=dout.dtype)
    np.put_along_axis(dwin, argmax[..., None].astype(np.intp), dout[..., None], axis=-1)
    dx = np.zeros(shape, dtype=dout.dtype)
    dx[:, :, : 2 * Ho, : 2 * Wo] = (
        dwin.reshape(N, C, Ho, Wo, 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(N, C, 2 * Ho, 2 * Wo)
    )
    return dx
