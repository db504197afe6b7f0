"""Fully connected layer: out = x · wᵀ + b.

Shapes: x (N, D); w (F, D) (PyTorch's layout: one row per output);
b (F,) or None; out (N, F).

    out[n, f] = Σ_d x[n, d] · w[f, d] + b[f]

Backward:

    dx[n, d] = Σ_f dout[n, f] · w[f, d]        dx = dout · w
    dw[f, d] = Σ_n dout[n, f] · x[n, d]        dw = doutᵀ · x
    db[f]    = Σ_n dout[n, f]                  (None when b is None)

Cache (the same for the loops and the reference version, which the fast
backend shares: NumPy's matrix product already is one BLAS call):
``(x, w, has_bias)``.
"""

import numpy as np

from ..validation import check_array


def _check_inputs(fn, x, w, b):
    check_array(x, f"{fn}: x", ndim=2, finite=False)
    check_array(w, f"{fn}: w", ndim=2, finite=False)
    if w.shape[1] != x.shape[1]:
        raise ValueError(f"{fn}: w: expected shape (F, {x.shape[1]}) to match x of shape {x.shape} "
                         f"(w has PyTorch's layout (out_features, in_features)), got {w.shape}")
    if w.dtype != x.dtype:
        raise TypeError(f"{fn}: w: expected dtype {x.dtype} (the dtype of x), got {w.dtype}")
    if b is not None:
        if not isinstance(b, np.ndarray):
            raise TypeError(f"{fn}: b: expected a numpy.ndarray or None, got {type(b).__name__}")
        if b.shape != (w.shape[0],):
            raise ValueError(f"{fn}: b: expected shape ({w.shape[0]},) (one per row of w), got {b.shape}")
        if b.dtype != x.dtype:
            raise TypeError(f"{fn}: b: expected dtype {x.dtype} (the dtype of x), got {b.dtype}")


def linear_forward_naive(x, w, b=None):
    """Loop version of :func:`linear_forward`; sums in Python floats."""
    _check_inputs("linear_forward_naive", x, w, b)
    N, D = x.shape
    F = w.shape[0]
    out = np.empty((N, F), dtype=x.dtype)
    for n in range(N):
        for f in range(F):
            s = 0.0
            for d in range(D):
                s += float(x[n, d]) * float(w[f, d])
            if b is not None:
                s += float(b[f])
            out[n, f] = s
    return out, (x, w, b is not None)


def linear_backward_naive(dout, cache):
    """Loop version of :func:`linear_backward`."""
    x, w, has_bias = cache
    N, D = x.shape
    F = w.shape[0]
    dx = np.empty_like(x)
    dw = np.empty_like(w)
    for n in range(N):
        for d in range(D):
            s = 0.0
            for f in range(F):
                s += float(dout[n, f]) * float(w[f, d])
            dx[n, d] = s
    for f in range(F):
        for d in range(D):
            s = 0.0
            for n in range(N):
                s += float(dout[n, f]) * float(x[n, d])
            dw[f, d] = s
    db = None
    if has_bias:
        db = np.empty(F, dtype=dout.dtype)
        for f in range(F):
            s = 0.0
            for n in range(N):
                s += float(dout[n, f])
            db[f] = s
    return dx, dw, db


def linear_forward(x, w, b=None):
    """Fully connected forward.

    x: (N, D) float32/float64; w: (F, D) same dtype; b: (F,) same dtype, or None.
    Returns (out (N, F), cache) with cache = (x, w, has_bias).
    """
    _check_inputs("linear_forward", x, w, b)
    out = x @ w.T
    if b is not None:
        out += b
    return out, (x, w, b is not None)


def linear_backward(dout, cache):
    """dout (N, F) -> (dx (N, D), dw (F, D), db (F,) or None)."""
    x, w, has_bias = cache
    dx = dout @ w
    dw = dout.T @ x
    db = dout.sum(axis=0) if has_bias else None
    return dx, dw, db
