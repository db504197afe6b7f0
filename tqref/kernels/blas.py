"""Matrix products that Numba kernels can call, through the BLAS numpy ships.

Why.  A convolution here is, per image, a few matrix products between
small column matrices and the weights (``conv_nhwc.py``).  Called from
Python, each product costs an interpreter round trip that holds the GIL,
plus a temporary and a copy to add the partial products together; with two
threads those round trips queue behind each other.  Measured on the 2-core
development machine (ResNet-20 layer shapes, batch 128, 2 threads), moving
the whole per-image loop into one Numba function that calls ``sgemm``
directly, accumulating the partial products in place (β = 1), ran a 3×3
convolution at 175–214 GFLOP/s instead of 121–171: 1.25–1.45× faster, and
the 32- and 64-channel layers then reach numpy's own 2048² sgemm rate.

How.  numpy's wheels bundle OpenBLAS and export its C interface (CBLAS)
under a prefixed name, e.g. ``scipy_cblas_sgemm64_`` with 64-bit integers.
This module finds that library file, loads it into the process's symbol
table (``llvmlite.binding.load_library_permanently``) and declares the
function to Numba by name (``numba.types.ExternalFunction``), so that
kernels calling it can still be cached on disk.  If no CBLAS is found (or
``TQREF_BLAS=loops`` is set), ``gemm`` is the plain-loop twin below:
correct, much slower.  With ``NUMBA_DISABLE_JIT=1`` the same CBLAS function
is called through ``ctypes``.

    gemm(a, b, c, beta=0.0, trans_a=False, trans_b=False)
        c = op(a) @ op(b) + beta · c,  op(m) = mᵀ if trans_m else m;
        a, b, c: 2-D, C-contiguous, same dtype (float32 or float64).
    gemm_naive(...)   the same with three loops (the reference)
    BLAS              a description of what ``gemm`` calls
"""

import ctypes
import os
import pathlib

import numba
import numpy as np
from numba import types

# CBLAS constants (cblas.h)
_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112


@numba.njit(cache=True, nogil=True)
def _check(a, b, c, trans_a, trans_b):
    """Shapes and memory layout, checked before handing raw pointers to BLAS."""
    m, k = (a.shape[1], a.shape[0]) if trans_a else (a.shape[0], a.shape[1])
    k2, n = (b.shape[1], b.shape[0]) if trans_b else (b.shape[0], b.shape[1])
    if k != k2 or c.shape[0] != m or c.shape[1] != n:
        raise ValueError("gemm: shapes of a, b and c do not fit c = op(a) @ op(b)")
    if not (a.flags.c_contiguous and b.flags.c_contiguous and c.flags.c_contiguous):
        raise ValueError("gemm: a, b and c must be C-contiguous")
    if not (a.itemsize == b.itemsize == c.itemsize):
        raise ValueError("gemm: a, b and c must have the same dtype")
    return m, n, k


@numba.njit(cache=True, nogil=True)
def gemm_naive(a, b, c, beta=0.0, trans_a=False, trans_b=False):
    """c = op(a) @ op(b) + beta · c with three loops: the reference for
    ``gemm``, and its stand-in where no CBLAS is found."""
    m, n, k = _check(a, b, c, trans_a, trans_b)
    for i in range(m):
        for j in range(n):
            s = 0.0
            for t in range(k):
                s += (a[t, i] if trans_a else a[i, t]) * (b[j, t] if trans_b else b[t, j])
            c[i, j] = s + beta * c[i, j] if beta != 0.0 else s


def _candidate_libraries():
    """Shared libraries that may hold numpy's BLAS: the ones bundled in the
    wheel first (cheap to find), then whatever threadpoolctl sees loaded."""
    root = pathlib.Path(np.__file__).resolve().parent
    paths = sorted(root.parent.glob("numpy.libs/*blas*")) + sorted(root.glob(".dylibs/*blas*"))
    yield from (str(p) for p in paths)
    try:
        from threadpoolctl import ThreadpoolController
        for c in ThreadpoolController().lib_controllers:
            if c.user_api == "blas":
                yield c.filepath
    except Exception:  # threadpoolctl missing or failing: no more candidates
        return


def _find_cblas():
    """(library path, sgemm symbol, dgemm symbol, integer ctype) or None."""
    if os.environ.get("TQREF_BLAS", "").lower() == "loops":
        return None
    # (prefix, suffix, integer type): numpy's scipy-openblas wheels (ILP64 and
    # LP64), then plain OpenBLAS / MKL / Accelerate names.
    names = [("scipy_", "64_", ctypes.c_int64), ("", "64_", ctypes.c_int64),
             ("scipy_", "", ctypes.c_int), ("", "", ctypes.c_int)]
    for path in _candidate_libraries():
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix, suffix, int_t in names:
            s, d = f"{prefix}cblas_sgemm{suffix}", f"{prefix}cblas_dgemm{suffix}"
            if hasattr(lib, s) and hasattr(lib, d):
                return path, s, d, int_t
    return None


def _declare(path, name, real, int_t):
    """The CBLAS function ``name`` as something a Numba kernel can call."""
    if numba.config.DISABLE_JIT:
        fn = getattr(ctypes.CDLL(path), name)
        r = ctypes.c_float if real == types.float32 else ctypes.c_double
        i, p = int_t, ctypes.c_void_p
        fn.argtypes = [ctypes.c_int] * 3 + [i] * 3 + [r, p, i, p, i, r, p, i]
        fn.restype = None
        return fn
    import llvmlite.binding as llvm
    llvm.load_library_permanently(path)
    i = types.int64 if int_t is ctypes.c_int64 else types.int32
    p = types.voidptr
    sig = types.void(types.int32, types.int32, types.int32, i, i, i, real, p, i, p, i, real, p, i)
    return types.ExternalFunction(name, sig)


_found = _find_cblas()
if _found is not None:
    try:
        _path, _s_name, _d_name, _int_t = _found
        _sgemm = _declare(_path, _s_name, types.float32, _int_t)
        _dgemm = _declare(_path, _d_name, types.float64, _int_t)
    except Exception as error:  # a library we could open but not load: loops, and say so
        import warnings
        warnings.warn(f"tqref: could not use {_found[1]} from {_found[0]} ({error}); matrix products "
                      f"fall back to plain loops (slow)", RuntimeWarning, stacklevel=2)
        _found = None

if _found is not None:
    BLAS = f"{_s_name} / {_d_name} from {os.path.basename(_path)}"
    _int = np.int64 if _int_t is ctypes.c_int64 else np.int32

    @numba.njit(cache=True, nogil=True)
    def gemm(a, b, c, beta=0.0, trans_a=False, trans_b=False):
        """c = op(a) @ op(b) + beta · c through CBLAS (row-major, so the
        leading dimension of each C-contiguous matrix is its row length)."""
        m, n, k = _check(a, b, c, trans_a, trans_b)
        if m == 0 or n == 0:
            return
        ta = _TRANS if trans_a else _NO_TRANS
        tb = _TRANS if trans_b else _NO_TRANS
        lda, ldb, ldc = _int(max(1, a.shape[1])), _int(max(1, b.shape[1])), _int(max(1, n))
        if c.itemsize == 4:
            _sgemm(_ROW_MAJOR, ta, tb, _int(m), _int(n), _int(k), np.float32(1.0), a.ctypes.data, lda,
                   b.ctypes.data, ldb, np.float32(beta), c.ctypes.data, ldc)
        else:
            _dgemm(_ROW_MAJOR, ta, tb, _int(m), _int(n), _int(k), 1.0, a.ctypes.data, lda,
                   b.ctypes.data, ldb, np.float64(beta), c.ctypes.data, ldc)
else:
    BLAS = "none found: plain Numba loops (slow)"
    gemm = gemm_naive
    if os.environ.get("TQREF_BLAS", "").lower() != "loops":
        import warnings
        warnings.warn("tqref: found no CBLAS library beside numpy; matrix products run as plain "
                      "loops (correct, many times slower)", RuntimeWarning, stacklevel=2)
