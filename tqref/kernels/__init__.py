"""Numba kernels that the fast operations in ``tqref.functional`` call.

Each kernel has a ``*_naive`` twin with the same signature, written with
NumPy slicing or plain loops, that the tests hold it equal to.  The kernels
run with ``NUMBA_DISABLE_JIT=1`` too (slowly): ``prange`` then is ``range``.

    im2col.py   im2col / col2im: the gather and scatter behind a convolution
                as a matrix product
"""

import os

# Numba's OpenMP workers spin after each parallel loop by default, and so do
# OpenBLAS's threads after each matmul; on a 2-core machine the two pools then
# steal each other's cores (measured: a ResNet-20 step 1.8 s -> 1.2 s with
# PASSIVE).  Must be set before the first parallel Numba call; a user's own
# setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
