"""Residual connections: the CIFAR ResNet "option A" shortcut and the add.

Option A (He et al. 2016, CIFAR experiments) is the parameter-free shortcut
used where a stage halves the resolution and doubles the channels:

    out = pad_channels(x[:, :, ::2, ::2])

x (N, C, H, W) -> out (N, out_channels, ⌈H/2⌉, ⌈W/2⌉).  The kept pixels are
(2i, 2j); odd H or W give ⌈H/2⌉ rows as slicing does in PyTorch.  The
channel axis gets p = (out_channels − C)//2 zero channels before the input
channels and the rest after, which is what the common PyTorch CIFAR ResNet
writes as ``F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, planes//4, planes//4))``
(there out_channels = planes = 2C, so p = planes//4 on both sides).

    out[n, p + c, i, j] = x[n, c, 2i, 2j],   other channels 0
    dx[n, c, 2i, 2j] = dout[n, p + c, i, j], dx = 0 at the dropped pixels

Cache: ``(x.shape, p)``.

Add (the residual join), a, b, out of one shape:

    out = a + b,     da = dout,  db = dout

Cache: ``a.shape``.  The backward returns two fresh arrays, so that a
caller updating one gradient in place cannot change the other.
"""

import numpy as np

from ..validation import check_array, check_positive_int

# ----------------------------------------------------------------------------
# option-A shortcut
# ----------------------------------------------------------------------------

def check_shortcut(fn, x, out_channels):
    check_array(x, f"{fn}: x", ndim=4, finite=False)
    out_channels = check_positive_int(out_channels, f"{fn}: out_channels")
    if out_channels < x.shape[1]:
        raise ValueError(f"{fn}: out_channels: expected at least the {x.shape[1]} channels of x "
                         f"{x.shape} (option A only pads), got {out_channels}")
    return out_channels


def option_a_shortcut_forward_naive(x, out_channels):
    """Loop version of :func:`option_a_shortcut_forward`."""
    out_channels = check_shortcut("option_a_shortcut_forward_naive", x, out_channels)
    N, C, H, W = x.shape
    Ho, Wo = (H + 1) // 2, (W + 1) // 2
    p = (out_channels - C) // 2
    out = np.zeros((N, out_channels, Ho, Wo), dtype=x.dtype)
    for n in range(N):
        for c in range(C):
            for i in range(Ho):
                for j in range(Wo):
                    out[n, p + c, i, j] = x[n, c, 2 * i, 2 * j]
    return out, (x.shape, p)


def option_a_shortcut_backward_naive(dout, cache):
    """Loop version of :func:`option_a_shortcut_backward`."""
    (N, C, H, W), p = cache
    Ho, Wo = (H + 1) // 2, (W + 1) // 2
    dx = np.zeros((N, C, H, W), dtype=dout.dtype)
    for n in range(N):
        for c in range(C):
            for i in range(Ho):
                for j in range(Wo):
                    dx[n, c, 2 * i, 2 * j] = dout[n, p + c, i, j]
    return dx


def option_a_shortcut_forward(x, out_channels):
    """x (N, C, H, W), out_channels ≥ C ->
    (out (N, out_channels, ⌈H/2⌉, ⌈W/2⌉), cache = (x.shape, p))."""
    out_channels = check_shortcut("option_a_shortcut_forward", x, out_channels)
    N, C, H, W = x.shape
    p = (out_channels - C) // 2
    sub = x[:, :, ::2, ::2]
    out = np.zeros((N, out_channels) + sub.shape[2:], dtype=x.dtype)
    out[:, p : p + C] = sub
    return out, (x.shape, p)


def option_a_shortcut_backward(dout, cache):
    """dout (N, out_channels, ⌈H/2⌉, ⌈W/2⌉) -> dx (N, C, H, W)."""
    (N, C, H, W), p = cache
    dx = np.zeros((N, C, H, W), dtype=dout.dtype)
    # The padded channels are constants: their gradient is dropped.
    dx[:, :, ::2, ::2] = dout[:, p : p + C]
    return dx


# ----------------------------------------------------------------------------
# residual add
# ----------------------------------------------------------------------------

def _check_add(fn, a, b):
    check_array(a, f"{fn}: a", finite=False)
    check_array(b, f"{fn}: b", finite=False)
    # No broadcasting: a shape mismatch in a residual block is a wiring bug.
    if a.shape != b.shape:
        raise ValueError(f"{fn}: b: expected the shape of a {a.shape}, got {b.shape}")
    if a.dtype != b.dtype:
        raise TypeError(f"{fn}: b: expected the dtype of a ({a.dtype}), got {b.dtype}")


def _check_add_grad(fn, dout, shape):
    if dout.shape != shape:
        raise ValueError(f"{fn}: dout: expected the shape of the forward output {shape}, got {dout.shape}")


def add_forward_naive(a, b):
    """Loop version of :func:`add_forward`."""
    _check_add("add_forward_naive", a, b)
    out = np.empty(a.shape, dtype=a.dtype)  # C order: out.reshape(-1) is a view, whatever a's layout
    fa, fb, fo = a.reshape(-1), b.reshape(-1), out.reshape(-1)
    for k in range(fa.size):
        fo[k] = fa[k] + fb[k]
    return out, a.shape


def add_backward_naive(dout, cache):
    """Loop version of :func:`add_backward`."""
    _check_add_grad("add_backward_naive", dout, cache)
    da = np.empty(cache, dtype=dout.dtype)
    db = np.empty(cache, dtype=dout.dtype)
    fd, fa, fb = dout.reshape(-1), da.reshape(-1), db.reshape(-1)
    for k in range(fd.size):
        fa[k] = fd[k]
        fb[k] = fd[k]
    return da, db


def add_forward(a, b):
    """a, b of one shape and dtype -> (out = a + b, cache = a.shape)."""
    _check_add("add_forward", a, b)
    return a + b, a.shape


def add_backward(dout, cache):
    """dout -> (da, db), both equal to dout, as two separate arrays."""
    _check_add_grad("add_backward", dout, cache)
    return dout.copy(), dout.copy()
