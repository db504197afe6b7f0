"""Backends: which implementation of each operation the layers run.

Every operation a tqref network uses exists in two *backends* with one
signature and one meaning:

    reference   plain vectorised NumPy on NCHW arrays: ``tqref.functional``,
                ``tqref.ternary.quantize``, ``tqref.optim.sgd_update``,
                ``tqref.data.crop_flip``.  The code a student reads next to
                the paper, fast enough to train a small net in minutes.
    fast        the Numba kernels of ``tqref.kernels.ops``: channels-last
                memory, both cores, batch norm fused with the residual add
                and ReLU, Winograd convolutions.  The default: what trains
                the CIFAR ResNets in hours.

(A third tier, the ``*_naive`` loops beside each reference operation, is the
equation written one element at a time: too slow to train, it is what the
tests hold both backends to.)

The layers of ``tqref.nn`` and ``tqref.ternary`` never import an
operation: at each forward pass they ask ``current_backend()`` and call
``B.conv2d_forward(...)``, and the backward pass goes to the backend that
made the cache.  Choosing a backend:

    tqref.use_backend("reference")                  # from now on
    with tqref.use_backend("reference"):            # inside the block only
        ...
    TQREF_BACKEND=reference python -m tqref train ...   # environment variable
    python -m tqref train --backend reference ...       # command line

and replacing single operations, e.g. with a student's own convolution
backward (the network then trains with it, everything else unchanged):

    with tqref.use_backend("reference", conv2d_backward=my_conv2d_backward):
        ...

The fast backend is built (and Numba imported) only when first used, so a
program that runs only the reference backend never loads a kernel.
"""

import os

ENV_VAR = "TQREF_BACKEND"
DEFAULT = "fast"
NAMES = ("reference", "fast")

# Every operation of the contract: (name, what it computes).  The layers
# call nothing else; ``Backend`` refuses a table that lacks one.
OPERATIONS = {
    "conv2d_forward": "2-D convolution (x, w, b, stride, padding) -> (out, cache)",
    "conv2d_backward": "(dout, cache) -> (dx, dw, db)",
    "linear_forward": "fully connected (x, w, b) -> (out, cache)",
    "linear_backward": "(dout, cache) -> (dx, dw, db)",
    "batchnorm_forward": "batch norm (x, gamma, beta, running_mean, running_var, training, momentum, eps)",
    "batchnorm_backward": "(dout, cache) -> (dx, dgamma, dbeta)",
    "batchnorm_relu_forward": "ReLU(BN(x) + residual): batchnorm_forward's arguments and residual=",
    "batchnorm_relu_backward": "(dout, cache) -> (dx, dgamma, dbeta, dsum)",
    "relu_forward": "max(x, 0) -> (out, cache)",
    "relu_backward": "(dout, cache) -> dx",
    "max_pool2x2_forward": "2×2 max pooling, stride 2 -> (out, cache)",
    "max_pool2x2_backward": "(dout, cache) -> dx",
    "global_avg_pool_forward": "mean over H, W: (N, C, H, W) -> ((N, C), cache)",
    "global_avg_pool_backward": "(dout, cache) -> dx",
    "option_a_shortcut_forward": "x[:, :, ::2, ::2] with zero channels (x, out_channels) -> (out, cache)",
    "option_a_shortcut_backward": "(dout, cache) -> dx",
    "add_forward": "a + b -> (out, cache)",
    "add_backward": "(dout, cache) -> (da, db)",
    "softmax_cross_entropy": "(logits, labels) -> (loss, dlogits)",
    "ternarize_expansions": "Eqs. (1)-(3), (5): (W, delta_factors, threshold_rule, per_channel) "
                            "-> [Ternarized(codes, alpha, threshold)] * t_ex",
    "straight_through_gradient": "Eq. (4): (dW_eff, W, t_ex, clip) -> dW",
    "sgd_update": "SGD step in place (p, g, v, lr, momentum, 1 - dampening, weight_decay, nesterov, first)",
    "all_finite": "x -> True when x holds no NaN or inf (every layer checks its input)",
    "crop_flip": "augmentation (uint8 images, flips, offsets, padding) -> images",
}


class Backend:
    """A named table of operations: ``B.conv2d_forward(...)``, one attribute
    per name of ``OPERATIONS``.

    name: str, shown in the training header and stored in ``config.json``
    ops:  {operation name: callable}, every name of ``OPERATIONS``
    """

    def __init__(self, name, ops):
        if not isinstance(name, str) or not name:
            raise TypeError(f"Backend: name: expected a non-empty str, got {name!r}")
        _check_ops(ops, f"Backend {name!r}", complete=True)
        self.name = name
        self.ops = dict(ops)
        for key, fn in self.ops.items():
            setattr(self, key, fn)

    def replace(self, name=None, **ops):
        """A new backend: this one with some operations replaced.

            mine = get_backend("reference").replace(conv2d_backward=my_conv2d_backward)

        name: defaults to "<this name>+<replaced operations>"."""
        _check_ops(ops, f"Backend {self.name!r}.replace", complete=False)
        if name is None:
            name = f"{self.name}+{','.join(sorted(ops))}" if ops else self.name
        return Backend(name, {**self.ops, **ops})

    def __repr__(self):
        return f"Backend({self.name!r})"


def _check_ops(ops, who, complete):
    unknown = sorted(set(ops) - set(OPERATIONS))
    if unknown:
        raise ValueError(f"{who}: unknown operation(s) {unknown}; expected names from "
                         f"tqref.backend.OPERATIONS: {sorted(OPERATIONS)}")
    missing = sorted(set(OPERATIONS) - set(ops)) if complete else []
    if missing:
        raise ValueError(f"{who}: missing operation(s) {missing}")
    for key, fn in ops.items():
        if not callable(fn):
            raise TypeError(f"{who}: {key}: expected a callable, got {type(fn).__name__} {fn!r:.60}")


# ---------------------------------------------------------------- the two tables
def _reference_ops():
    from tqref import functional as F
    from tqref.data import crop_flip
    from tqref.optim import sgd_update
    from tqref.ternary import quantize as q
    from tqref.validation import all_finite
    ops = {name: getattr(F, name) for name in OPERATIONS if hasattr(F, name)}
    ops.update(ternarize_expansions=q.ternarize_expansions,
               straight_through_gradient=q.straight_through_gradient,
               sgd_update=sgd_update, all_finite=all_finite, crop_flip=crop_flip)
    return ops


# The operations the fast backend takes from the reference unchanged: NumPy
# already runs each as one BLAS call or one vectorised expression.
SHARED_WITH_REFERENCE = ("linear_forward", "linear_backward", "softmax_cross_entropy",
                         "max_pool2x2_forward", "max_pool2x2_backward", "add_forward", "add_backward",
                         "straight_through_gradient")


def _fast_ops():
    from tqref.kernels import ops as K
    ops = {name: fn for name, fn in _reference_ops().items() if name in SHARED_WITH_REFERENCE}
    ops.update({name: getattr(K, name) for name in OPERATIONS if name not in SHARED_WITH_REFERENCE})
    return ops


_BUILDERS = {"reference": _reference_ops, "fast": _fast_ops}
_BUILT = {}
_CURRENT = []  # [Backend] once chosen


def get_backend(name):
    """The backend called ``name`` ("reference" or "fast"), built on first use."""
    if isinstance(name, Backend):
        return name
    if name not in _BUILDERS:
        raise ValueError(f"backend: expected one of {list(NAMES)} (or a tqref.backend.Backend), "
                         f"got {name!r}")
    if name not in _BUILT:
        _BUILT[name] = Backend(name, _BUILDERS[name]())
    return _BUILT[name]


def current_backend():
    """The backend the layers run now: the last ``use_backend``, else the
    environment variable TQREF_BACKEND, else "fast"."""
    if not _CURRENT:
        name = os.environ.get(ENV_VAR, "") or DEFAULT
        if name not in _BUILDERS:
            raise ValueError(f"environment variable {ENV_VAR}: expected one of {list(NAMES)}, got {name!r}")
        _CURRENT.append(get_backend(name))
    return _CURRENT[0]


class use_backend:
    """Run the layers on another backend: from now on, or inside a ``with`` block.

        use_backend("reference")                       # a plain call switches for good
        with use_backend("fast"):                      # a with block switches back at its end
            ...
        with use_backend("reference", conv2d_backward=mine) as B:   # replace operations
            ...

    backend: "reference", "fast" or a ``Backend``
    ops:     operations to replace (names of ``OPERATIONS``), e.g. a student's own
    """

    def __init__(self, backend, **ops):
        chosen = get_backend(backend)
        if ops:
            chosen = chosen.replace(**ops)
        self.previous = current_backend()
        self.backend = chosen
        _CURRENT[0] = chosen

    def __enter__(self):
        return self.backend

    def __exit__(self, *exc):
        _CURRENT[0] = self.previous
        return False

    def __repr__(self):
        return f"use_backend({self.backend.name!r})"
