"""ReLU: y = max(x, 0).

Backward: ∂L/∂x = ∂L/∂y · 1[x > 0]  (we take the subgradient 0 at x = 0).

Each operation in ``tqref.functional`` comes as a forward/backward pair:

    out, cache = op_forward(...)      # cache: what the backward needs
    grads      = op_backward(dout, cache)

and in three tiers with one signature (``tqref.backend``): ``*_naive``
(plain loops, read it first), the reference backend's vectorised NumPy here,
and the fast backend's Numba kernels (``tqref.kernels.ops``).  Tests hold
them equal.  A cache is read only by the backward of the same tier.
"""

import numpy as np


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


def relu_forward(x):
    """x: any shape -> out: same shape.  cache = x."""
    return np.maximum(x, 0), x


def relu_backward(dout, cache):
    """dout: like out -> dx = dout · 1[x > 0]."""
    x = cache
    return dout * (x > 0)
