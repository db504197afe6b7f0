"""The fast backend: Numba kernels, and the operations built on them.

``ops.py`` holds the fast backend's operations, with the signatures of the
reference ones in ``tqref.functional`` (``tqref.backend`` puts each set in
a table).  Each kernel has a twin that the tests hold it equal to: a
``*_naive`` function beside it (im2col, col2im, the row columns), or the
reference operation it speeds up (batch norm, ReLU, the quantizer
``tqref.ternary.quantize.ternarize_expansions``, ``tqref.optim.sgd_update``,
``tqref.data.crop_flip``).  The kernels run with ``NUMBA_DISABLE_JIT=1``
too (slowly): ``prange`` then is ``range``.

    ops.py         the fast backend's operations: layout, threading and fusion around the kernels

    im2col.py      im2col / col2im in NCHW: the classic gather and scatter behind a
                   convolution as a matrix product (the readable reference)
    conv_nhwc.py   the convolution the fast ops use: channels-last, per-image
                   columns and BLAS products inside one Numba call per core
    winograd.py    Winograd F(2×2, 3×3): the 3×3 stride-1 convolutions with ≥ 16 input and output
                   channels (conv_nhwc.WINOGRAD_MIN_CHANNELS)
    blas.py        gemm: numpy's BLAS called from inside Numba kernels (loop twin as fallback)
    batchnorm.py   batch norm statistics, and BN (+ residual add) + ReLU fused, forward and backward
    elementwise.py ReLU forward/backward, add
    reduce.py      the NaN/inf scan of every layer's input
    quantize.py    the paper's quantizer: Δ, α and codes of all t_ex expansions in two passes
    layout.py      NCHW shapes over channels-last memory (why: conv_nhwc.py)
    parallel.py    parallel_for: each core runs the kernels and BLAS on its own slice of the batch
    augment.py     data augmentation (twin: tqref.data.crop_flip)
    sgd.py         the SGD update in one pass (twin: tqref.optim.sgd_update)
    ternary_engine.py  add-only ternary convolution for inference, the kernel behind tqref.deploy
"""

import os

# Numba's OpenMP workers spin after each parallel loop by default, and so do
# OpenBLAS's threads after each matmul; on a 2-core machine the two pools then
# steal each other's cores (measured: a ResNet-20 step 1.8 s -> 1.2 s with
# PASSIVE).  Must be set before the first parallel Numba call; a user's own
# setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
