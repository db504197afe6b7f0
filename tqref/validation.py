"""Input checks shared by operations and layers.

Every check raises an error that names *who* complained (a layer or an
argument), what was expected and what was found, so that a student who feeds
a (H, W, C) image into a convolution learns exactly what went wrong.
"""

import numpy as np

FLOAT_DTYPES = (np.float32, np.float64)


class NonFiniteError(ValueError):
    """An array that holds NaN or inf (a ValueError: bad input to a function;
    the trainer reads it as a sign that training diverged)."""


def check_array(x, who, *, ndim=None, dtype_like=None, float_only=True, finite=True):
    """Check that ``x`` is a NumPy array of the expected kind.

    x:          the array to check
    who:        name used in the message, e.g. ``"Conv2d 'layer1.0.conv1' input"``
    ndim:       required number of dimensions (int) or None
    dtype_like: an array whose dtype ``x`` must match (e.g. the layer's weight)
    float_only: require float32 or float64
    finite:     reject NaN and inf

    Returns ``x`` unchanged, so calls can be chained.
    """
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{who}: expected a numpy.ndarray, got {type(x).__name__}")
    if ndim is not None and x.ndim != ndim:
        raise ValueError(
            f"{who}: expected a {ndim}-D array, got {x.ndim}-D array of shape {x.shape}"
        )
    if float_only and x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{who}: expected dtype float32 or float64, got {x.dtype}")
    if dtype_like is not None and x.dtype != dtype_like.dtype:
        raise TypeError(
            f"{who}: expected dtype {dtype_like.dtype} (the layer's parameters), got {x.dtype}; "
            f"convert with x.astype(np.{dtype_like.dtype})"
        )
    if finite and not all_finite(x):
        n_bad = int(x.size - np.count_nonzero(np.isfinite(x)))
        raise NonFiniteError(f"{who}: contains {n_bad} NaN or inf value(s) (shape {x.shape})")
    return x


def all_finite(x):
    """True when ``x`` holds no NaN or inf.

    One reduction instead of a boolean temporary: NaN and inf propagate into
    the sum.  A finite array whose float sum overflows is rare; only then do
    we pay for the exact element-wise test.
    """
    if x.size == 0:
        return True
    with np.errstate(over="ignore", invalid="ignore"):
        s = x.sum(dtype=np.float64)
    if np.isfinite(s):
        return True
    return bool(np.isfinite(x).all())


def check_positive_int(value, who):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{who}: expected a positive integer, got {value!r}")
    return int(value)


def check_nonnegative_int(value, who):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{who}: expected a non-negative integer, got {value!r}")
    return int(value)
