"""Run one function over slices of the batch on all cores, BLAS inside.

Why not Numba's ``parallel=True``?  The convolutions spend most of their
time in matrix products, and a matrix product is fastest when each core
multiplies a block that stays in its own cache (measured on the 2-core
development machine: one image of a 16-channel 32×32 layer, a 1024×144 by
144×16 product, runs at 70–80 % of a core's peak, while the same product
over the whole batch, 75 MB of columns, runs at 20–40 % of the machine's).
The batch is split here, in Python, rather than with a ``prange``: thread t
gets images [n0, n1) and makes one call to a Numba kernel (compiled with
``nogil=True``) that loops over those images, building each image's
columns in a reusable scratch buffer of its own and multiplying them with
single-threaded BLAS (``blas.gemm``), while the other thread does the same
on another slice.  The scratch buffers outlive the call (``scratch``), so a
step does not allocate and page-fault fresh megabytes for every layer.

    parallel_for(fn, n)     fn(t, start, stop) for T contiguous slices of range(n)

Every ``fn`` writes only its own slice of the outputs, or a private
buffer indexed by t (``scratch(t, ...)``) that the caller reduces
afterwards: two threads never write the same element.

The number of threads is ``numba.get_num_threads()``, so
``numba.set_num_threads(k)`` (or ``NUMBA_NUM_THREADS``) sets it for the
Numba and the BLAS parts alike.  While the slices run, BLAS is switched to
one thread (else each call would start its own threads, four on two cores)
and switched back afterwards.
"""

import threading
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np

_pool = None
_pool_size = 0
_pool_lock = threading.Lock()
_blas = None  # list of threadpoolctl controllers of the loaded BLAS libraries
_local = threading.local()


def num_threads():
    """Threads a parallel section uses: Numba's setting (1 inside a worker)."""
    if getattr(_local, "in_worker", False):
        return 1
    return numba.get_num_threads()


def _get_pool(size):
    global _pool, _pool_size
    with _pool_lock:
        if _pool is None or _pool_size < size:
            if _pool is not None:
                _pool.shutdown(wait=True)
            _pool = ThreadPoolExecutor(max_workers=size, thread_name_prefix="tqref")
            _pool_size = size
    return _pool


def _blas_controllers():
    """The BLAS libraries numpy loaded (threadpoolctl, imported lazily: it
    costs ~50 ms and ``import tqref`` must stay quick)."""
    global _blas
    if _blas is None:
        from threadpoolctl import ThreadpoolController
        _blas = [c for c in ThreadpoolController().lib_controllers if c.user_api == "blas"]
    return _blas


class _BlasOneThread:
    """Context: BLAS on one thread, then back to what it was."""

    def __enter__(self):
        self.saved = []
        for c in _blas_controllers():
            n = c.get_num_threads()
            if n != 1:
                c.set_num_threads(1)
                self.saved.append((c, n))
        return self

    def __exit__(self, *exc):
        for c, n in self.saved:
            c.set_num_threads(n)
        return False


def _run_in_worker(fn, t, start, stop):
    _local.in_worker = True
    try:
        return fn(t, start, stop)
    finally:
        _local.in_worker = False


def split(n, parts):
    """Boundaries of ``parts`` contiguous, near-equal slices of range(n)."""
    return [n * t // parts for t in range(parts + 1)]


def parallel_for(fn, n, min_items=1):
    """Call ``fn(t, start, stop)`` for T = min(threads, n // min_items)
    contiguous slices of range(n), slice 0 on the calling thread; wait for all.

    Exceptions in any slice are re-raised here.  With one thread (or little
    work) this is just ``fn(0, 0, n)``.
    """
    T = max(1, min(num_threads(), n // max(1, min_items)))
    if T == 1:
        fn(0, 0, n)
        return
    bounds = split(n, T)
    pool = _get_pool(T - 1)
    with _BlasOneThread():
        futures = [pool.submit(_run_in_worker, fn, t, bounds[t], bounds[t + 1]) for t in range(1, T)]
        try:
            _run_in_worker(fn, 0, bounds[0], bounds[1])
        finally:
            for f in futures:
                f.result()


def scratch(t, key, size, dtype):
    """A reusable 1-D work array of at least ``size`` elements for slice t.

    Kept per (calling thread, key, dtype) and grown when needed, so that a
    step does not page-fault fresh megabytes for every layer.  Contents are
    undefined.
    """
    store = _scratch_store
    k = (threading.get_ident(), key, np.dtype(dtype).str)
    buf = store.get(k)
    if buf is None or buf.size < size:
        buf = np.empty(max(size, 1), dtype=dtype)
        store[k] = buf
    return buf[:size]


_scratch_store = {}
