"""Element-wise kernels on flat ranges [i0, i1) of 1-D arrays (ReLU, add).

The arrays are the raw memory of same-layout tensors
(``tqref.kernels.layout.flat_view``), so position i means the same element
in all of them; ``parallel_for`` gives each core its own range.

Each kernel first slices its range (``x[i0:i1]``) and loops over
``range(len)``: Numba then knows every index is ≥ 0 and skips the
negative-index wrap-around test, which otherwise keeps LLVM from
vectorising the loop (measured 9× slower for ``for i in range(i0, i1)``).

    relu_forward(x, y, i0, i1)            y = max(x, 0)
    relu_backward(dout, y, dx, i0, i1)    dx = dout · 1[y > 0]   (y: the forward *output*)
    add(a, b, out, i0, i1)                out = a + b
    add_inplace(a, b, i0, i1)             a += b
"""

import numba


@numba.njit(cache=True, nogil=True)
def relu_forward(x, y, i0, i1):
    xs, ys = x[i0:i1], y[i0:i1]
    zero = y.dtype.type(0)
    for i in range(xs.size):
        v = xs[i]
        ys[i] = v if v > zero else zero


@numba.njit(cache=True, nogil=True)
def relu_backward(dout, y, dx, i0, i1):
    ds, ys, dxs = dout[i0:i1], y[i0:i1], dx[i0:i1]
    zero = dx.dtype.type(0)
    for i in range(ds.size):
        dxs[i] = ds[i] if ys[i] > 0 else zero


@numba.njit(cache=True, nogil=True)
def add(a, b, out, i0, i1):
    As, bs, os_ = a[i0:i1], b[i0:i1], out[i0:i1]
    for i in range(As.size):
        os_[i] = As[i] + bs[i]


@numba.njit(cache=True, nogil=True)
def add_inplace(a, b, i0, i1):
    As, bs = a[i0:i1], b[i0:i1]
    for i in range(As.size):
        As[i] += bs[i]
