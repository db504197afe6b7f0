"""Module: the base class of every layer with parameters (Chainer's "link",
PyTorch's ``nn.Module``), without any autograd.

A module owns three dictionaries of NumPy arrays:

    params   learnable arrays (conv ``weight``, BN ``weight``/``bias`` = γ/β, ...)
    grads    ∂L/∂param, same keys and shapes, *overwritten* by each ``backward``
    buffers  saved but not learned (BN ``running_mean``/``running_var``)

and a set of child modules, registered automatically when assigned as
attributes (``self.conv1 = Conv2d(...)``).  Qualified names join the
attribute names with dots (``layer1.0.conv1.weight``), the same names a
PyTorch CIFAR ResNet uses, so checkpoints and exports read alike.

The training step is explicit, as in CS231n's ``layers.py``:

    logits = model.forward(x)        # each layer keeps what its backward needs
    loss, dlogits = softmax_cross_entropy(logits, y)
    model.backward(dlogits)          # fills every module's grads
    optimizer.step()                 # updates params in place

Because ``backward`` *writes* the gradients (it does not add to them), no
``zero_grad`` is needed between steps; a parameter used twice in one forward
pass would need accumulation, and tqref's networks use each parameter once.
"""

import contextlib

import numpy as np

from tqref.backend import current_backend
from tqref.validation import check_array

# Whether layers keep the caches their backward passes need (see no_grad).
_KEEP_CACHES = [True]


@contextlib.contextmanager
def no_grad():
    """Inference only: inside ``with no_grad():`` layers keep no cache for a
    backward pass, so each activation is freed as soon as the next layer has
    used it (a ResNet forward then holds one or two activations, not all of
    them).  ``backward`` after such a forward is an error."""
    previous = _KEEP_CACHES[0]
    _KEEP_CACHES[0] = False
    try:
        yield
    finally:
        _KEEP_CACHES[0] = previous


class Module:
    """Base class.  Subclasses implement ``forward(x)`` and ``backward(dout)``."""

    def __init__(self):
        # object.__setattr__ because our own __setattr__ looks at _children
        object.__setattr__(self, "_children", {})
        self.params = {}
        self.grads = {}
        self.buffers = {}
        self.training = True
        self.path = ""  # qualified name, set when attached to a parent

    # ------------------------------------------------------------------ tree
    def __setattr__(self, key, value):
        if isinstance(value, Module):
            self._children[key] = value
            value._set_path(f"{self.path}.{key}" if self.path else key)
        elif key in getattr(self, "_children", {}):
            del self._children[key]
        object.__setattr__(self, key, value)

    def _set_path(self, path):
        object.__setattr__(self, "path", path)
        for key, child in self._children.items():
            child._set_path(f"{path}.{key}")

    def register_child(self, key, module):
        """Register a child under a name that is not an identifier (``"0"``)."""
        self._children[key] = module
        module._set_path(f"{self.path}.{key}" if self.path else key)

    def replace_child(self, key, module):
        """Put ``module`` where the child ``key`` was (used to convert layers
        in place, e.g. Conv2d -> TernaryConv2d).  Returns the old child."""
        if key not in self._children:
            raise KeyError(f"{self.describe()}: no child named {key!r}")
        old = self._children[key]
        if getattr(self, key, None) is old:
            setattr(self, key, module)
        else:
            self.register_child(key, module)
        return old

    def children(self):
        """Direct children, in registration order: dict name -> Module."""
        return dict(self._children)

    def named_modules(self, prefix=""):
        """Yield (qualified name, module) for this module and all below it."""
        yield prefix, self
        for key, child in self._children.items():
            yield from child.named_modules(f"{prefix}.{key}" if prefix else key)

    def describe(self):
        """``Conv2d 'layer1.0.conv1'``: how error messages name this layer."""
        return f"{type(self).__name__} '{self.path}'" if self.path else type(self).__name__

    # ------------------------------------------------------------ parameters
    def add_param(self, name, value):
        """Register a learnable array and its gradient buffer."""
        self.params[name] = value
        self.grads[name] = np.zeros_like(value)

    def _named(self, which):
        for prefix, module in self.named_modules():
            for key, arr in getattr(module, which).items():
                yield (f"{prefix}.{key}" if prefix else key), arr

    def named_parameters(self):
        """Yield (qualified name, array) for every learnable array."""
        return self._named("params")

    def named_gradients(self):
        return self._named("grads")

    def named_buffers(self):
        return self._named("buffers")

    def parameters_and_gradients(self):
        """List of (name, param, grad) triples: what the optimiser updates."""
        out = []
        for prefix, module in self.named_modules():
            for key, p in module.params.items():
                out.append((f"{prefix}.{key}" if prefix else key, p, module.grads[key]))
        return out

    # {parameter key: factor} for parameters that should step with a scaled
    # learning rate (a layer sets it; e.g. TTQ's scales, see ternary/variants.py)
    param_lr_multipliers = {}

    def lr_multipliers(self):
        """{qualified name: factor} gathered from every module's
        ``param_lr_multipliers``: pass it to ``SGD(..., lr_multipliers=...)``."""
        out = {}
        for prefix, module in self.named_modules():
            for key, factor in module.param_lr_multipliers.items():
                if key in module.params:
                    out[f"{prefix}.{key}" if prefix else key] = factor
        return out

    def num_parameters(self):
        """Number of learnable scalars (running statistics not counted)."""
        return sum(p.size for _, p in self.named_parameters())

    @property
    def dtype(self):
        for _, p in self.named_parameters():
            return p.dtype
        return np.dtype(np.float32)

    def zero_grad(self):
        for _, g in self.named_gradients():
            g.fill(0)

    # ------------------------------------------------------------ mode, dtype
    def train(self, mode=True):
        """Training mode (BN uses batch statistics).  Returns self."""
        for _, module in self.named_modules():
            module.training = bool(mode)
        return self

    def eval(self):
        """Evaluation mode (BN uses running statistics).  Returns self."""
        return self.train(False)

    def astype(self, dtype):
        """Convert parameters, gradients and buffers to ``dtype`` (float32 or
        float64) in place and return self.  Create the optimiser afterwards:
        it keeps references to the arrays."""
        dtype = np.dtype(dtype)
        if dtype not in (np.float32, np.float64):
            raise TypeError(f"{self.describe()}.astype: expected float32 or float64, got {dtype}")
        for _, module in self.named_modules():
            for store in (module.params, module.grads, module.buffers):
                for key in store:
                    store[key] = store[key].astype(dtype)
        return self

    # ------------------------------------------------------------ state dict
    def state_dict(self):
        """dict qualified name -> array copy, for parameters and buffers.

        Plain arrays only, so ``np.savez(path, **model.state_dict())`` and
        ``np.load(path, allow_pickle=False)`` round-trip it."""
        state = {name: p.copy() for name, p in self.named_parameters()}
        state.update({name: b.copy() for name, b in self.named_buffers()})
        return state

    def load_state_dict(self, state, strict=True):
        """Copy arrays from ``state`` (a dict or an ``np.load`` result) into
        this model, in place (an optimiser's references stay valid).

        strict: every key of the model must be present and no extra key may
        appear.  Shapes must match exactly; values are cast to the model's dtype.
        """
        targets = dict(self.named_parameters())
        targets.update(self.named_buffers())
        keys = set(state.keys())
        if strict:
            missing = sorted(set(targets) - keys)
            unexpected = sorted(keys - set(targets))
            if missing or unexpected:
                raise ValueError(
                    f"{self.describe()}.load_state_dict: state does not fit this model "
                    f"(a checkpoint of another model?); missing keys: {missing[:5]}"
                    f"{' ...' if len(missing) > 5 else ''}, unexpected keys: {unexpected[:5]}"
                    f"{' ...' if len(unexpected) > 5 else ''}"
                )
        for name, target in targets.items():
            if name not in keys:
                continue
            value = np.asarray(state[name])
            if value.shape != target.shape:
                raise ValueError(
                    f"{self.describe()}.load_state_dict: '{name}': expected shape {target.shape}, "
                    f"found {value.shape} (a checkpoint of another model?)"
                )
            check_array(value, f"{self.describe()}.load_state_dict: '{name}'")
            target[...] = value
        return self

    # ------------------------------------------------------------ computation
    def forward(self, x):
        raise NotImplementedError

    def backward(self, dout):
        raise NotImplementedError

    def __call__(self, x):
        return self.forward(x)

    def __repr__(self):
        lines = [f"{type(self).__name__}({self.extra_repr()})"]
        for key, child in self._children.items():
            child_lines = repr(child).splitlines()
            lines.append(f"  ({key}): " + child_lines[0])
            lines.extend("  " + line for line in child_lines[1:])
        return "\n".join(lines)

    def extra_repr(self):
        return ""

    # ------------------------------------------------------------ checks
    def check_input(self, x, ndim, channels=None, channel_axis=1):
        """Reject inputs this layer cannot take, naming the layer.

        Checks: ndarray, ``ndim`` dimensions, float dtype equal to the
        parameters', ``channels`` along ``channel_axis``, no NaN/inf in the
        input or in the parameters."""
        who = f"{self.describe()} input"
        ref = next(iter(self.params.values()), None)
        check_array(x, who, ndim=ndim, dtype_like=ref, finite=False)
        # the NaN/inf scan runs on every layer's input: the backend's all_finite
        # (on the fast backend a parallel kernel: NumPy's one-core pass cost
        # ~15 % of a ResNet forward)
        if not current_backend().all_finite(x):
            check_array(x, who)  # raises the usual "contains n NaN or inf value(s)"
        if channels is not None and x.shape[channel_axis] != channels:
            layout = "(N, C, H, W)" if ndim == 4 else "(N, D)"
            raise ValueError(
                f"{who}: expected {channels} channels on axis {channel_axis} of {layout}, "
                f"got shape {x.shape}"
            )
        for key, p in self.params.items():
            check_array(p, f"{self.describe()} parameter '{key}'")
        return x

    def _keep(self, backend, cache):
        """Keep what the backward pass needs: the operation's cache and the
        backend that made it (a cache is read only by its own backend's
        backward).  Inside ``no_grad()`` nothing is kept."""
        self._cache = (backend, cache) if _KEEP_CACHES[0] else None

    def _pop_cache(self):
        """(backend, cache) of the last forward pass, then forgotten."""
        kept = getattr(self, "_cache", None)
        if kept is None:
            raise RuntimeError(f"{self.describe()}.backward called without a forward pass before it "
                               f"(or after a forward inside tqref.nn.no_grad())")
        self._cache = None  # free the activations as soon as they are used
        return kept
