"""SGD with momentum / Nesterov / weight decay, and learning-rate schedules.

The optimiser follows ``torch.optim.SGD`` exactly (same equations, same
first-step rule), so a run can be checked against PyTorch number for number.
With g = the gradient, p = a parameter, v = its momentum buffer:

    d = g + λ·p                              weight decay λ: L2 added to the gradient
    v = μ·v + (1 − τ)·d                      momentum μ, dampening τ; v = d at step 1
    s = d + μ·v   (Nesterov)   or   s = v
    p = p − η·s                              learning rate η

The He, Gong, Fan (WACV 2019) ternary-net recipe trains with this rule,
decaying *all* parameters, with the learning rate divided by 10 at epochs 80
and 120 and halved at 160 (``paper_schedule()``).

Learning-rate schedules are stateless: ``schedule.lr_at(epoch)`` is a pure
function of the (possibly fractional) epoch, so updating once per iteration is
``opt.lr = schedule.lr_at(epoch + i / iters_per_epoch)``.  Resuming a run
therefore needs only the epoch number for the schedule, plus
``SGD.state_dict()`` for the momentum buffers.
"""

import math
from numbers import Real

import numpy as np

from tqref.backend import current_backend
from tqref.validation import FLOAT_DTYPES

__all__ = [
    "SGD",
    "LRSchedule",
    "ConstantLR",
    "MultiStepLR",
    "CosineLR",
    "LinearWarmup",
    "paper_schedule",
    "PAPER_MILESTONES",
    "PAPER_GAMMAS",
]

PAPER_MILESTONES = (80, 120, 160)
PAPER_GAMMAS = (0.1, 0.1, 0.5)


def _check_real(value, who, *, low=None, low_inclusive=True, high=None, high_inclusive=True):
    """A finite real number (bools rejected) within the given bounds, as float."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, Real):
        raise TypeError(f"{who}: expected a real number, got {type(value).__name__} {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{who}: expected a finite number, got {value!r}")
    if low is not None and (v < low or (v == low and not low_inclusive)):
        op = ">=" if low_inclusive else ">"
        raise ValueError(f"{who}: expected a number {op} {low}, got {value!r}")
    if high is not None and (v > high or (v == high and not high_inclusive)):
        op = "<=" if high_inclusive else "<"
        raise ValueError(f"{who}: expected a number {op} {high}, got {value!r}")
    return v


# --------------------------------------------------------------------- SGD
def sgd_update(p, g, v, lr, momentum, one_minus_dampening, weight_decay, nesterov, first):
    """The update of the module docstring with NumPy, on p (and v) in place:
    the reference backend's; the fast backend's is ``tqref.kernels.sgd.sgd_update``
    (one pass, same arguments, same float32 operations in the same order).

    ``first``: v holds nothing yet and becomes d (PyTorch's first-step rule);
    with ``momentum == 0`` v is not touched."""
    d = g + weight_decay * p if weight_decay != 0 else g
    if momentum != 0:
        if first:
            v[...] = d
        elif one_minus_dampening != 1:
            v[...] = momentum * v + one_minus_dampening * d
        else:
            v[...] = momentum * v + d
        s = d + momentum * v if nesterov else v
    else:
        s = d
    p -= lr * s


class SGD:
    """Stochastic gradient descent with momentum, Nesterov and weight decay.

    params:          list of (name, param, grad) triples, e.g.
                     ``model.parameters_and_gradients()``.  The arrays are kept
                     by reference: backward writes into ``grad`` in place and
                     ``step()`` writes into ``param`` in place.
    lr:              learning rate η >= 0 (schedules overwrite ``opt.lr``)
    momentum:        μ in [0, 1); 0 means plain SGD without a buffer
    nesterov:        use the Nesterov step s = d + μ·v (needs μ > 0, τ = 0)
    weight_decay:    λ >= 0, added to the gradient as λ·p (L2, as in PyTorch)
    dampening:       τ in [0, 1]
    no_weight_decay: names of parameters that get λ = 0 (default: none, as
                     in the paper)
    lr_multipliers:  {name: factor}: those parameters step with η·factor
                     (default: none; ``model.lr_multipliers()`` gives what the
                     layers ask for, e.g. TTQ's scales)

    For each parameter p (any shape), gradient g (same shape and dtype):

        d = g + λ·p
        v = μ·v + (1 − τ)·d        (first step: v = d, without dampening)
        s = d + μ·v  if nesterov  else  v
        p ← p − η·s          (η·factor for a parameter in ``lr_multipliers``)

    All arithmetic runs in the parameter's dtype (float32 stays float32).
    ``grad`` is never modified.  Each parameter is updated by the backend's
    ``sgd_update`` (``tqref.backend``): :func:`sgd_update` above with NumPy,
    or the fast backend's Numba kernel, one pass that allocates nothing.
    """

    def __init__(self, params, lr=0.1, momentum=0.9, nesterov=False,
                 weight_decay=0.0, dampening=0.0, no_weight_decay=(), lr_multipliers=None):
        self._lr = _check_real(lr, "SGD argument 'lr'", low=0.0)
        self.momentum = _check_real(momentum, "SGD argument 'momentum'",
                                    low=0.0, high=1.0, high_inclusive=False)
        self.weight_decay = _check_real(weight_decay, "SGD argument 'weight_decay'", low=0.0)
        self.dampening = _check_real(dampening, "SGD argument 'dampening'", low=0.0, high=1.0)
        if not isinstance(nesterov, (bool, np.bool_)):
            raise TypeError(f"SGD argument 'nesterov': expected True or False, got {nesterov!r}")
        self.nesterov = bool(nesterov)
        if self.nesterov and (self.momentum <= 0.0 or self.dampening != 0.0):
            raise ValueError(
                "SGD argument 'nesterov': Nesterov momentum needs momentum > 0 and "
                f"dampening == 0, got momentum={momentum!r}, dampening={dampening!r}"
            )

        self.params = self._check_params(params)
        names = [name for name, _, _ in self.params]

        if isinstance(no_weight_decay, str):
            # a bare string would otherwise be read as a set of characters
            no_weight_decay = (no_weight_decay,)
        self.no_weight_decay = frozenset(no_weight_decay)
        unknown = sorted(self.no_weight_decay - set(names))
        if unknown:
            raise ValueError(
                f"SGD argument 'no_weight_decay': expected names of parameters, "
                f"got unknown name(s) {unknown}"
            )

        self.lr_multipliers = dict(lr_multipliers or {})
        unknown = sorted(set(self.lr_multipliers) - set(names))
        if unknown:
            raise ValueError(
                f"SGD argument 'lr_multipliers': expected names of parameters, "
                f"got unknown name(s) {unknown}"
            )
        for name, factor in self.lr_multipliers.items():
            _check_real(factor, f"SGD argument 'lr_multipliers[{name!r}]'", low=0.0)

        self._buffers = {name: None for name in names}
        self._step_count = 0

    @staticmethod
    def _check_params(params):
        if isinstance(params, np.ndarray) or not hasattr(params, "__iter__"):
            raise TypeError(
                "SGD argument 'params': expected a list of (name, param, grad) triples, "
                f"got {type(params).__name__}"
            )
        params = list(params)
        if not params:
            raise ValueError("SGD argument 'params': expected at least one parameter, got an empty list")
        seen_names, seen_arrays = set(), {}
        checked = []
        for i, triple in enumerate(params):
            if not isinstance(triple, (tuple, list)) or len(triple) != 3:
                raise TypeError(
                    f"SGD argument 'params'[{i}]: expected a (name, param, grad) triple, got {triple!r:.80}"
                )
            name, p, g = triple
            who = f"SGD argument 'params'[{i}] ({name!r})"
            if not isinstance(name, str):
                raise TypeError(f"{who}: expected the name to be a str, got {type(name).__name__}")
            if name in seen_names:
                raise ValueError(f"{who}: expected unique names, got {name!r} twice")
            for what, a in (("param", p), ("grad", g)):
                if not isinstance(a, np.ndarray):
                    raise TypeError(f"{who}: expected {what} to be a numpy.ndarray, got {type(a).__name__}")
                if a.dtype not in FLOAT_DTYPES:
                    raise TypeError(f"{who}: expected {what} dtype float32 or float64, got {a.dtype}")
            if g.shape != p.shape or g.dtype != p.dtype:
                raise ValueError(
                    f"{who}: expected grad like param {p.shape} {p.dtype}, got grad {g.shape} {g.dtype}"
                )
            if not p.flags.writeable:
                raise ValueError(f"{who}: expected a writeable param array (it is updated in place)")
            if id(p) in seen_arrays:
                # tied weights would silently be stepped twice per step()
                raise ValueError(f"{who}: the same param array is already listed as {seen_arrays[id(p)]!r}")
            seen_names.add(name)
            seen_arrays[id(p)] = name
            checked.append((name, p, g))
        return checked

    # ----------------------------------------------------------- lr property
    @property
    def lr(self):
        """Learning rate η used by the next ``step()``."""
        return self._lr

    @lr.setter
    def lr(self, value):
        self._lr = _check_real(value, "SGD attribute 'lr'", low=0.0)

    @property
    def step_count(self):
        """Number of ``step()`` calls so far."""
        return self._step_count

    def __repr__(self):
        return (
            f"SGD({len(self.params)} params, lr={self._lr!r}, momentum={self.momentum!r}, "
            f"nesterov={self.nesterov!r}, weight_decay={self.weight_decay!r}, "
            f"dampening={self.dampening!r})"
        )

    # ---------------------------------------------------------------- update
    def zero_grad(self):
        """Set every gradient to 0 (in place, so the model's references stay valid)."""
        for _, _, g in self.params:
            g.fill(0)

    def step(self):
        """Apply one update to every parameter, in place."""
        for name, p, g in self.params:
            self._update(name, p, g)
        self._step_count += 1

    def _update(self, name, p, g):
        # Scalars as the param's dtype: a NumPy float64 scalar (e.g. from a
        # schedule) would otherwise promote float32 arithmetic to float64.
        t = p.dtype.type
        lr = t(self._lr * self.lr_multipliers.get(name, 1.0))
        wd = t(0.0 if name in self.no_weight_decay else self.weight_decay)
        v = self._buffers[name]
        first = v is None
        if first and self.momentum != 0.0:
            v = self._buffers[name] = np.empty_like(p)  # filled with d by the first step
        # without momentum the kernel never touches v: p stands in for it
        current_backend().sgd_update(p, g, p if v is None else v, lr, t(self.momentum), t(1.0 - self.dampening), wd,
                                     self.nesterov, first)

    # ------------------------------------------------------------ state dict
    def _config(self):
        return {
            "config.momentum": self.momentum,
            "config.dampening": self.dampening,
            "config.weight_decay": self.weight_decay,
            "config.nesterov": self.nesterov,
        }

    def state_dict(self):
        """Everything needed to continue bit-identically, as plain arrays.

        Keys:
            "lr"                  0-d float64
            "step_count"          0-d int64
            "config.<name>"       0-d: momentum, dampening, weight_decay (float64),
                                  nesterov (bool); checked, not restored, on load
            "momentum.<param>"    momentum buffer, like the param (after step 1)

        Saves with ``np.savez(path, **sd)``; loads with
        ``np.load(path, allow_pickle=False)``.  The arrays are copies.
        """
        sd = {
            "lr": np.array(self._lr, dtype=np.float64),
            "step_count": np.array(self._step_count, dtype=np.int64),
        }
        for key, value in self._config().items():
            sd[key] = np.array(value, dtype=np.bool_ if isinstance(value, bool) else np.float64)
        for name, v in self._buffers.items():
            if v is not None:
                sd[f"momentum.{name}"] = v.copy()
        return sd

    def load_state_dict(self, state):
        """Restore a ``state_dict()`` (a dict or the result of ``np.load``).

        Checks everything before changing anything, so a failed load leaves
        the optimiser as it was.  The hyper-parameters under ``config.`` must
        equal this optimiser's: a resumed run with a different momentum would
        not be the same run.
        """
        keys = set(state.keys())
        for key in ("lr", "step_count", *self._config()):
            if key not in keys:
                raise KeyError(f"SGD.load_state_dict: missing key {key!r}")

        def scalar(key):
            a = np.asarray(state[key])
            if a.shape != ():
                raise ValueError(f"SGD.load_state_dict: key {key!r}: expected a 0-d array, got shape {a.shape}")
            return a[()]

        lr = _check_real(scalar("lr"), "SGD.load_state_dict: key 'lr'", low=0.0)
        step_count = scalar("step_count")
        if not isinstance(step_count, np.integer) or step_count < 0:
            raise ValueError(
                f"SGD.load_state_dict: key 'step_count': expected a non-negative integer, got {step_count!r}"
            )
        for key, mine in self._config().items():
            saved = scalar(key)
            saved = bool(saved) if isinstance(mine, bool) else float(saved)
            if saved != mine:
                raise ValueError(
                    f"SGD.load_state_dict: key {key!r}: saved {saved!r}, but this optimiser has {mine!r}"
                )

        expected = set()
        if self.momentum != 0.0 and step_count > 0:
            expected = {f"momentum.{name}" for name, _, _ in self.params}
        found = {k for k in keys if k.startswith("momentum.")}
        if expected - found:
            raise KeyError(f"SGD.load_state_dict: missing key(s) {sorted(expected - found)}")
        unexpected = keys - expected - {"lr", "step_count", *self._config()}
        if unexpected:
            raise KeyError(f"SGD.load_state_dict: unexpected key(s) {sorted(unexpected)}")

        buffers = {}
        for name, p, _ in self.params:
            key = f"momentum.{name}"
            if key not in expected:
                buffers[name] = None
                continue
            v = np.asarray(state[key])
            if v.shape != p.shape:
                raise ValueError(
                    f"SGD.load_state_dict: key {key!r}: expected shape {p.shape} (the param), got {v.shape}"
                )
            if v.dtype != p.dtype:
                raise TypeError(
                    f"SGD.load_state_dict: key {key!r}: expected dtype {p.dtype} (the param), got {v.dtype}"
                )
            buffers[name] = np.array(v, copy=True)

        self._lr = lr
        self._step_count = int(step_count)
        self._buffers = buffers


# ----------------------------------------------------------------- schedules
class LRSchedule:
    """Base class: a learning rate as a pure function of the epoch.

    ``lr_at(epoch)`` accepts a fractional epoch >= 0 (epoch 2.5 = half-way
    through the third epoch) and returns a float.  Subclasses implement
    ``_lr(epoch)`` with the epoch already checked.
    """

    def lr_at(self, epoch):
        epoch = _check_real(epoch, f"{type(self).__name__}.lr_at argument 'epoch'", low=0.0)
        return float(self._lr(epoch))

    def _lr(self, epoch):
        raise NotImplementedError


class ConstantLR(LRSchedule):
    """lr(e) = lr for every epoch e."""

    def __init__(self, lr):
        self.lr = _check_real(lr, "ConstantLR argument 'lr'", low=0.0)

    def _lr(self, epoch):
        return self.lr

    def __repr__(self):
        return f"ConstantLR(lr={self.lr!r})"


class MultiStepLR(LRSchedule):
    """lr(e) = base_lr · Π_{i : milestones[i] <= e} gammas[i].

    milestones: strictly increasing epochs > 0
    gammas:     one positive factor per milestone, or a single float for all

    The paper's schedule is ``MultiStepLR(0.1, (80, 120, 160), (0.1, 0.1, 0.5))``:
    0.1 until epoch 80, then 0.01, 0.001 from 120 and 0.0005 from 160.
    """

    def __init__(self, base_lr, milestones, gammas):
        self.base_lr = _check_real(base_lr, "MultiStepLR argument 'base_lr'", low=0.0)
        if isinstance(milestones, (str, bytes)) or not hasattr(milestones, "__iter__"):
            raise TypeError(
                f"MultiStepLR argument 'milestones': expected a sequence of epochs, got {milestones!r}"
            )
        ms = tuple(milestones)
        for m in ms:
            _check_real(m, "MultiStepLR argument 'milestones'", low=0.0, low_inclusive=False)
        for prev, nxt in zip(ms, ms[1:]):
            if not nxt > prev:
                raise ValueError(
                    f"MultiStepLR argument 'milestones': expected strictly increasing epochs, got {ms}"
                )
        if isinstance(gammas, Real) and not isinstance(gammas, (bool, np.bool_)):
            gs = (gammas,) * len(ms)
        else:
            if isinstance(gammas, (str, bytes)) or not hasattr(gammas, "__iter__"):
                raise TypeError(
                    f"MultiStepLR argument 'gammas': expected a number or a sequence of numbers, got {gammas!r}"
                )
            gs = tuple(gammas)
            if len(gs) != len(ms):
                raise ValueError(
                    f"MultiStepLR argument 'gammas': expected one factor per milestone "
                    f"({len(ms)}), got {len(gs)}"
                )
        for g in gs:
            _check_real(g, "MultiStepLR argument 'gammas'", low=0.0, low_inclusive=False)
        self.milestones = ms
        self.gammas = tuple(gs)

    def _lr(self, epoch):
        # multiply in milestone order, so every epoch past a milestone gets
        # the very same float (no drift from recomputing the product otherwise)
        lr = self.base_lr
        for m, g in zip(self.milestones, self.gammas):
            if epoch >= m:
                lr *= g
        return lr

    def __repr__(self):
        return f"MultiStepLR(base_lr={self.base_lr!r}, milestones={self.milestones!r}, gammas={self.gammas!r})"


class CosineLR(LRSchedule):
    """Cosine annealing from base_lr at epoch 0 to min_lr at total_epochs:

        lr(e) = min_lr + (base_lr − min_lr) · (1 + cos(π · e / total_epochs)) / 2

    and min_lr after total_epochs.
    """

    def __init__(self, base_lr, total_epochs, min_lr=0.0):
        self.base_lr = _check_real(base_lr, "CosineLR argument 'base_lr'", low=0.0)
        self.total_epochs = _check_real(total_epochs, "CosineLR argument 'total_epochs'",
                                        low=0.0, low_inclusive=False)
        self.min_lr = _check_real(min_lr, "CosineLR argument 'min_lr'", low=0.0, high=self.base_lr)

    def _lr(self, epoch):
        t = min(epoch, self.total_epochs) / self.total_epochs
        return self.min_lr + (self.base_lr - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * t))

    def __repr__(self):
        return f"CosineLR(base_lr={self.base_lr!r}, total_epochs={self.total_epochs!r}, min_lr={self.min_lr!r})"


class LinearWarmup(LRSchedule):
    """Linear warm-up in front of another schedule:

        lr(e) = (f + (1 − f) · e / warmup_epochs) · schedule.lr_at(e)   for e < warmup_epochs
        lr(e) = schedule.lr_at(e)                                       afterwards

    with f = start_factor in [0, 1].  The wrapped schedule is not shifted:
    its epoch 0 is still the start of training.
    """

    def __init__(self, schedule, warmup_epochs, start_factor=0.0):
        if not isinstance(schedule, LRSchedule):
            raise TypeError(
                f"LinearWarmup argument 'schedule': expected an LRSchedule, got {type(schedule).__name__}"
            )
        self.schedule = schedule
        self.warmup_epochs = _check_real(warmup_epochs, "LinearWarmup argument 'warmup_epochs'",
                                         low=0.0, low_inclusive=False)
        self.start_factor = _check_real(start_factor, "LinearWarmup argument 'start_factor'",
                                        low=0.0, high=1.0)

    def _lr(self, epoch):
        lr = self.schedule.lr_at(epoch)
        if epoch >= self.warmup_epochs:
            return lr
        f = self.start_factor
        return (f + (1.0 - f) * epoch / self.warmup_epochs) * lr

    def __repr__(self):
        return (f"LinearWarmup(schedule={self.schedule!r}, warmup_epochs={self.warmup_epochs!r}, "
                f"start_factor={self.start_factor!r})")


def paper_schedule(base_lr=0.1):
    """The paper's CIFAR schedule: ÷10 at epochs 80 and 120, ÷2 at 160."""
    return MultiStepLR(base_lr, PAPER_MILESTONES, PAPER_GAMMAS)
