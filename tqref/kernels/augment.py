"""Data augmentation of the paper's CIFAR recipe: random crop + horizontal flip.

For every image n of a uint8 batch (N, C, H, W) the caller draws

    offsets[n] = (oy, ox)   integers in [0, 2·padding]
    flips[n]   = 0 or 1

and the output is the H×W window at (oy, ox) of the image zero-padded by
``padding`` pixels on every side, mirrored left-right when flips[n] = 1
(crop first, then flip, as torchvision's RandomCrop + RandomHorizontalFlip):

    j' = W − 1 − j  if flips[n]  else  j
    out[n, c, i, j] = x_pad[n, c, i + oy, j' + ox]
                    = x[n, c, i + oy − padding, j' + ox − padding]   (0 outside x)

With padding 4 and 32×32 images that is "a random 32×32 crop of the 40×40
zero-padded image".  The draws are made by the caller (``tqref.data``) with
one vectorised call to a ``numpy.random.Generator``, so this module holds no
randomness and the kernel and its naive twin can be compared exactly.

    crop_flip(images, flips, offsets, padding) -> out uint8 (N, C, H, W)   Numba, parallel over n

the fast backend's twin of ``tqref.data.crop_flip`` (np.pad + slicing, one
image at a time), which the tests hold it equal to.
"""

import numba
import numpy as np

# Small batches run on the calling thread: waking the thread pool costs more
# than copying a few images.  im2col.py's launcher holds that rule for both.
from tqref.data import check_crop_flip
from tqref.kernels.im2col import _launch


@numba.njit(cache=True, parallel=True)
def _crop_flip_kernel(images, flips, offsets, padding, out):
    """out[n, c, i, j] = x[n, c, i + oy − p, j' + ox − p] (0 outside), j' = W−1−j if flipped."""
    N, C, H, W = images.shape
    for n in numba.prange(N):  # each n writes only out[n]
        dy = offsets[n, 0] - padding
        dx = offsets[n, 1] - padding
        flip = flips[n] != 0
        for c in range(C):
            for i in range(H):
                h = i + dy
                if h < 0 or h >= H:
                    for j in range(W):
                        out[n, c, i, j] = 0
                    continue
                for j in range(W):
                    jj = W - 1 - j if flip else j
                    w = jj + dx
                    if w < 0 or w >= W:
                        out[n, c, i, j] = 0
                    else:
                        out[n, c, i, j] = images[n, c, h, w]


def crop_flip(images, flips, offsets, padding):
    """``tqref.data.crop_flip`` (same arguments and result), one image per
    thread iteration, each output pixel written once."""
    flips, offsets, padding = check_crop_flip(images, flips, offsets, padding)
    out = np.empty_like(images)
    args = (np.ascontiguousarray(images), flips, offsets, padding, out)
    _launch(_crop_flip_kernel, images.size, images.shape[0], *args)  # one thread for small batches
    return out
