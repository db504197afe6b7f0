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

Functions (same signature)
---------
crop_flip(images, flips, offsets, padding)        -> out uint8 (N, C, H, W)   Numba, parallel over n
crop_flip_naive(images, flips, offsets, padding)  -> the same, np.pad + slicing, one image at a time
"""

import numba
import numpy as np

# Small batches run on the calling thread: waking the thread pool costs more
# than copying a few images.  im2col.py's launcher holds that rule for both.
from tqref.kernels.im2col import _launch


def _check(images, flips, offsets, padding):
    if not isinstance(images, np.ndarray) or images.ndim != 4 or images.dtype != np.uint8:
        raise ValueError(
            f"crop_flip: images: expected a uint8 array (N, C, H, W), got "
            f"{getattr(images, 'dtype', type(images).__name__)} of shape {getattr(images, 'shape', None)}")
    N = images.shape[0]
    flips = np.asarray(flips)
    offsets = np.asarray(offsets)
    if flips.shape != (N,) or flips.dtype.kind not in "biu":
        raise ValueError(f"crop_flip: flips: expected ({N},) booleans or 0/1 integers, "
                         f"got {flips.dtype} of shape {flips.shape}")
    if offsets.shape != (N, 2) or offsets.dtype.kind not in "iu":
        raise ValueError(f"crop_flip: offsets: expected ({N}, 2) integers, "
                         f"got {offsets.dtype} of shape {offsets.shape}")
    if isinstance(padding, bool) or not isinstance(padding, (int, np.integer)) or padding < 0:
        raise ValueError(f"crop_flip: padding: expected a non-negative integer, got {padding!r}")
    if N and (offsets.min() < 0 or offsets.max() > 2 * padding):
        raise ValueError(f"crop_flip: offsets: expected integers in [0, {2 * padding}] "
                         f"(2·padding), found [{offsets.min()}, {offsets.max()}]")
    return flips.astype(np.uint8), offsets.astype(np.int64), int(padding)


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
    """Random-crop-and-flip a uint8 batch with given draws (see module docstring).

    images:  uint8 (N, C, H, W)
    flips:   (N,) bool or 0/1 integers: mirror image n left-right
    offsets: (N, 2) integers in [0, 2·padding]: top-left corner (oy, ox) of
             the window in the padded image (padding, padding = no shift)
    padding: zero border width

    Returns a new uint8 array of the shape of ``images``.
    """
    flips, offsets, padding = _check(images, flips, offsets, padding)
    out = np.empty_like(images)
    args = (np.ascontiguousarray(images), flips, offsets, padding, out)
    _launch(_crop_flip_kernel, images.size, images.shape[0], *args)  # one thread for small batches
    return out


def crop_flip_naive(images, flips, offsets, padding):
    """Reference twin of :func:`crop_flip`: pad, cut the window, mirror."""
    flips, offsets, padding = _check(images, flips, offsets, padding)
    N, C, H, W = images.shape
    padded = np.pad(images, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    out = np.empty_like(images)
    for n in range(N):
        oy, ox = offsets[n]
        window = padded[n, :, oy:oy + H, ox:ox + W]
        out[n] = window[:, :, ::-1] if flips[n] else window
    return out
