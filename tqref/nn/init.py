"""Weight initialisation (He et al. 2015), as the paper's CIFAR recipe uses.

Values are drawn in float64 from a ``numpy.random.Generator`` and then cast,
so a float32 and a float64 model built with the same seed hold the same
weights up to rounding.
"""

import numpy as np


def he_normal_fan_out(rng, shape, dtype=np.float32):
    """Conv weight w: (F, C, HH, WW) ~ N(0, 2 / (HH·WW·F))  (fan-out mode).

    Fan-out keeps the variance of the *gradients* constant through the
    backward pass; it is the init of the CIFAR ResNets the paper trains."""
    F, _, HH, WW = shape
    std = np.sqrt(2.0 / (HH * WW * F))
    return (rng.standard_normal(shape) * std).astype(dtype)


def he_normal_fan_in(rng, shape, dtype=np.float32):
    """Linear weight w: (F, D) ~ N(0, 2 / D)  (fan-in mode)."""
    fan_in = int(np.prod(shape[1:]))
    std = np.sqrt(2.0 / fan_in)
    return (rng.standard_normal(shape) * std).astype(dtype)


def as_generator(seed_or_rng):
    """Accept a seed (int or None) or a Generator; return a Generator."""
    if isinstance(seed_or_rng, np.random.Generator):
        return seed_or_rng
    return np.random.default_rng(seed_or_rng)
