"""NCHW shapes, channels-last memory.

Every public array of tqref has the NCHW *shape* (N, C, H, W) of PyTorch and
CS231n.  The fast kernels, though, work on channels-last memory (why: see
``tqref.kernels.conv_nhwc``), and they return their outputs as NCHW-shaped
*views* of NHWC buffers: ``y_nhwc.transpose(0, 3, 1, 2)``.  Indexing such a
view as y[n, c, h, w] gives the same numbers as a C-ordered array would; only
the strides differ (PyTorch calls this ``memory_format=torch.channels_last``).

So a whole network converts once, at its first layer (the input batch comes
NCHW-contiguous from the data pipeline), and its outputs stay channels-last
from layer to layer: ``to_nhwc`` below is then a free view.

    to_nhwc(x)   (N, C, H, W) any strides -> (N, H, W, C) C-contiguous (a view if possible)
    to_nchw(y)   (N, H, W, C) -> the (N, C, H, W) view
"""

import numpy as np


def is_channels_last(x):
    """True when the (N, C, H, W) array x is a view of C-contiguous NHWC memory."""
    return x.ndim == 4 and x.transpose(0, 2, 3, 1).flags.c_contiguous


def to_nhwc(x):
    """(N, C, H, W) -> (N, H, W, C) C-contiguous: a view for channels-last
    input, one copy otherwise."""
    t = x.transpose(0, 2, 3, 1)
    return t if t.flags.c_contiguous else np.ascontiguousarray(t)


def to_nchw(y):
    """(N, H, W, C) -> the (N, C, H, W) view of the same memory."""
    return y.transpose(0, 3, 1, 2)


def flat_view(x):
    """The 1-D memory of x when x is C-contiguous or channels-last, else None.

    Element-wise kernels work on this; ``np.empty_like(x)`` keeps x's memory
    order, so its flat view lines up with x's element for element.
    """
    if x.flags.c_contiguous:
        return x.reshape(-1)
    if is_channels_last(x):
        return x.transpose(0, 2, 3, 1).reshape(-1)
    return None
