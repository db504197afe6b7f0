"""ReLU: y = max(x, 0).

Backward: ∂L/∂x = ∂L/∂y · 1[x > 0]  (we take the subgradient 0 at x = 0).

Each operation in ``tqref.functional`` comes as a forward/backward pair:

    out, cache = op_forward(...)      # cache: what the backward needs
    grads      = op_backward(dout, cache)

and in two versions with the same signature: ``*_naive`` (plain loops, read it
first) and the fast one (vectorised or Numba).  Tests hold them equal.
"""

import numpy as np

from tqref.kernels import elementwise as kew
from tqref.kernels.layout import flat_view
from tqref.kernels.parallel import parallel_for


def relu_forward_naive(x):
    """x: any shape -> out: same shape.  One element at a time."""
    out = np.empty(x.shape, dtype=x.dtype)  # C order, so out.reshape(-1) is a view, whatever x's layout
    flat_x, flat_out = x.reshape(-1), out.reshape(-1)
    for i in range(flat_x.size):
        flat_out[i] = flat_x[i] if flat_x[i] > 0 else 0
    return out, x


def relu_backward_naive(dout, cache):
    """dout: like out -> dx: like x."""
    x = cache
    dx = np.empty(dout.shape, dtype=dout.dtype)  # C order: dx.reshape(-1) is a view
    flat_x, flat_d, flat_dx = x.reshape(-1), dout.reshape(-1), dx.reshape(-1)
    for i in range(flat_x.size):
        flat_dx[i] = flat_d[i] if flat_x[i] > 0 else 0
    return dx


# Below this many elements a kernel runs on the calling thread alone.
_PARALLEL_MIN_ELEMENTS = 1 << 16


def relu_forward(x):
    """x: any shape -> out: same shape and memory layout.  Numba, both cores.

    cache = out: the backward needs only the sign, and out > 0 exactly
    where x > 0, so the input need not be kept alive (the next layer keeps
    out anyway).  The naive backward reads its cache the same way."""
    xf = flat_view(x)
    if xf is None:
        x = np.ascontiguousarray(x)
        xf = x.reshape(-1)
    out = np.empty_like(x)  # same layout as x (order "K")
    of = flat_view(out)
    parallel_for(lambda t, i0, i1: kew.relu_forward(xf, of, i0, i1), xf.size, _PARALLEL_MIN_ELEMENTS)
    return out, out


def relu_backward(dout, cache):
    """dout: like out -> dx: like x.  dx = dout where the cached out > 0, else 0."""
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
