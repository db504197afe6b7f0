"""Checkpoints (``.npz``, written atomically) and the export for PyTorch users.

A tqref checkpoint is one ``.npz`` file that ``np.load(path,
allow_pickle=False)`` opens: nothing in it can run code.  Its keys:

    format            "tqref-checkpoint-1"
    config            JSON text: the run's settings (model, ternary, t_ex, lr, ...)
    epoch             int: epochs completed
    schedule          text: the learning-rate schedule, e.g. "MultiStepLR(base_lr=0.1, ...)"
    rng_state         JSON text: the data Generator's ``bit_generator.state``
    top1, top5        test accuracy after this epoch
    best_top1, best_epoch, best_top5
    model/<name>      the model's state_dict (latent weights for ternary layers)
    optim/<key>       ``tqref.optim.SGD.state_dict()`` (momentum buffers, step count, lr)
    weights_only      True in a checkpoint written by ``save_weights_only``

A weights-only checkpoint (``save_weights_only``; ``python -m tqref export
CKPT OUT --format weights``) is the same file without the momentum buffers,
which are as large as the weights themselves: about half the size, and
everything but ``--resume`` reads it (evaluate, summary, plot, the exports,
``--init-from``).  The finished runs in results/ are published this way.
``split_checkpoint`` (``--format split``) writes the buffers it leaves out
to a second file beside it, ``<name>.momentum.npz``; ``--resume`` reads the
pair as the whole checkpoint.  That is how a run still training is kept in
results/, whose files stay under 5 MB each.

Writes are atomic (``atomic_savez``): the arrays go to a temporary file in
the same folder, which is flushed to disk (fsync) and then renamed over the
target (``os.replace``).  A run killed at any moment therefore leaves either
the old checkpoint or the new one, never half of one.

Export for PyTorch (``export_torch``): an ``.npz`` whose keys are those of the
usual PyTorch CIFAR ResNet (``conv1.weight``, ``bn1.running_var``,
``layer2.0.conv1.weight``, ``linear.bias``, ...; tqref's names already are),
in PyTorch's layouts (conv (F, C, HH, WW), linear (out, in)), with each BN's
``num_batches_tracked``.  A ternary layer contributes its *effective* weight
W_eff = Σ_k α_k T_k (Eq. 5; α·T for t_ex = 1), so a plain full-precision
PyTorch network that loads it computes what the ternary tqref network does:

    state = {k: torch.from_numpy(v) for k, v in np.load("resnet20_torch.npz").items()}
    net.load_state_dict(state)

This module never imports torch.
"""

import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

FORMAT = "tqref-checkpoint-1"


class CheckpointError(ValueError):
    """A checkpoint that is missing, truncated, corrupt or of another model."""


# ---------------------------------------------------------------- atomic files
def _fsync_dir(folder):
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # not supported on every platform; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask():
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path, write):
    """Call ``write(file)`` on a temporary file beside ``path``, fsync it and
    rename it to ``path``.  On any failure the temporary file is removed and
    ``path`` is left as it was."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual mode
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_savez(path, arrays):
    """``np.savez(path, **arrays)``, atomically.  Returns the Path."""
    return atomic_write(path, lambda f: np.savez(f, **arrays))


def atomic_write_bytes(path, data):
    """Write ``data`` (bytes) to ``path`` atomically.  Returns the Path."""
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path, text):
    """Write ``text`` (UTF-8) to ``path`` atomically.  Returns the Path."""
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def check_writable_dir(folder, who="output folder"):
    """Create ``folder`` if needed and prove a file can be written in it.

    Raises PermissionError (an OSError) with a message naming the folder, so
    a run fails before it trains rather than after its first epoch.  Returns
    True when this call created the folder."""
    folder = Path(folder)
    created = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-test-")
        os.close(fd)
        os.remove(probe)
    except OSError as err:
        raise PermissionError(
            f"{who} {folder} is not writable ({err.strerror or err}); "
            f"choose a folder you can write to") from None
    return created


# ---------------------------------------------------------------- JSON
def to_json_value(value):
    """A copy of ``value`` made of the types ``json.dumps`` writes, numbers unchanged:

        dict                    -> dict, keys made str, values converted
        list, tuple             -> list, items converted (TTQ's α pair (W_p, W_n) -> [W_p, W_n])
        np.ndarray, any shape   -> nested lists (``tolist()``): a per-channel α (F,) -> F numbers,
                                   a 0-d array -> its number
        bool, np.bool_          -> bool
        int, np.integer         -> int
        float, np.floating      -> float (an np.float32 α becomes the float64 of the same value)
        None, str               -> itself

    Anything else raises a TypeError naming its type, rather than writing a
    file that no JSON reader turns back into the value.  Used for the
    training log (``tqref.train.ternary_stats``) and ``ModelSummary.to_dict``.
    """
    if isinstance(value, dict):
        return {str(k): to_json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json_value(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_json_value(value.tolist())
    if isinstance(value, (bool, np.bool_)):  # before int: bool is a subclass of int
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    if value is None or isinstance(value, str):
        return value
    raise TypeError(f"to_json_value: cannot make {type(value).__name__} JSON-safe: {value!r}")


# ---------------------------------------------------------------- RNG state
def rng_state_to_json(rng):
    """A Generator's ``bit_generator.state`` as JSON text (PCG64's 128-bit
    integers survive: JSON integers have no size limit in Python)."""
    state = rng.bit_generator.state
    if state.get("bit_generator") != "PCG64":
        raise TypeError(f"rng_state_to_json: only PCG64 generators (np.random.default_rng) are "
                        f"supported, got {state.get('bit_generator')}")
    return json.dumps(state)


def rng_from_json(text):
    """Rebuild the Generator saved by ``rng_state_to_json``."""
    state = json.loads(text)
    if not isinstance(state, dict) or state.get("bit_generator") != "PCG64":
        raise CheckpointError(f"rng_state: expected a PCG64 state, got {str(text)[:80]!r}")
    rng = np.random.Generator(np.random.PCG64())
    rng.bit_generator.state = state
    return rng


# ---------------------------------------------------------------- models from configs
def model_from_config(config):
    """Build the (untrained) model a run config describes: ``config["model"]``
    from ``tqref.models``, converted with ``tqref.ternary.ternarize_model``
    when ``config["ternary"]``."""
    from tqref.models import get_model
    model = get_model(config["model"], seed=config.get("seed", 0))
    if config.get("ternary"):
        try:
            from tqref.ternary import ternarize_model
        except ImportError as err:
            raise ImportError(f"this run is ternary but tqref.ternary cannot be imported: {err}") from None
        kwargs = {"t_ex": config.get("t_ex", 1),
                  "keep_first": config.get("keep_first", False),
                  "keep_last": config.get("keep_last", False)}
        if config.get("variant", "paper") != "paper":
            kwargs["variant"] = config["variant"]
        if config.get("threshold_rule") is not None:
            kwargs["threshold_rule"] = config["threshold_rule"]
        if config.get("delta_factors") is not None:
            kwargs["delta_factors"] = tuple(config["delta_factors"])
        model = ternarize_model(model, **kwargs)
    return model


def ternary_layers(model):
    """(qualified name, layer) of every quantized layer, in network order:
    ``tqref.ternary.quantized_layers``, the layers that
    ``tqref.ternary.convert.is_quantized_layer`` accepts (each has
    ``quantize()`` and ``effective_weight()``)."""
    # imported here, as in model_from_config: reading and writing checkpoints
    # does not need the layers (nor Numba) until a model is involved
    from tqref.ternary.convert import quantized_layers
    return quantized_layers(model)


# ---------------------------------------------------------------- checkpoints
class Checkpoint:
    """What ``load_checkpoint`` read: ``model_state`` and ``optim_state``
    (dicts of arrays), ``config`` (dict), ``epoch``, ``schedule`` (text),
    ``rng_state`` (JSON text or None), ``metrics`` (top1, top5, best_top1,
    best_top5, best_epoch), ``path``, ``weights_only`` (True: the momentum
    buffers were left out, so it cannot be resumed)."""

    def __init__(self, path, model_state, optim_state, config, epoch, schedule, rng_state, metrics,
                 weights_only=False):
        self.path, self.model_state, self.optim_state = Path(path), model_state, optim_state
        self.config, self.epoch, self.schedule, self.rng_state = config, epoch, schedule, rng_state
        self.metrics, self.weights_only = metrics, weights_only

    def __repr__(self):
        return (f"Checkpoint({str(self.path)!r}, model={self.config.get('model')!r}, "
                f"ternary={self.config.get('ternary')}, epoch={self.epoch})")


def save_checkpoint(path, model, config, *, optimizer=None, epoch=0, schedule=None, rng=None, metrics=None):
    """Write a checkpoint atomically (see the module docstring for its keys)."""
    arrays = {"format": np.array(FORMAT), "config": np.array(json.dumps(config, sort_keys=True)),
              "epoch": np.array(int(epoch), dtype=np.int64),
              "schedule": np.array(repr(schedule) if schedule is not None else "")}
    if rng is not None:
        arrays["rng_state"] = np.array(rng_state_to_json(rng))
    for key, value in (metrics or {}).items():
        arrays[key] = np.array(value, dtype=np.int64 if key.endswith("epoch") else np.float64)
    for name, value in model.state_dict().items():
        arrays[f"model/{name}"] = value
    if optimizer is not None:
        for name, value in optimizer.state_dict().items():
            arrays[f"optim/{name}"] = value
    return atomic_savez(path, arrays)


def _read_all(path, what):
    """Every array of the .npz ``path``, read now (a truncated file fails here)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return {key: z[key] for key in z.files}
    except (zipfile.BadZipFile, EOFError, ValueError, OSError, KeyError) as err:
        raise CheckpointError(f"{what} {path}: not a readable .npz file (truncated or corrupt?): "
                              f"{type(err).__name__}: {err}") from None


def load_checkpoint(path):
    """Read a checkpoint written by ``save_checkpoint`` (every array is read
    now, so a truncated file fails here with a CheckpointError, not later)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path}: file not found")
    arrays = _read_all(path, "checkpoint")
    if "format" not in arrays or str(arrays["format"][()]) != FORMAT or "config" not in arrays:
        found = str(arrays["format"][()]) if "format" in arrays else "no 'format' key"
        raise CheckpointError(f"checkpoint {path}: not a tqref checkpoint (expected format {FORMAT!r}, "
                              f"found {found}); a plain state dict loads with --init-from")
    try:
        config = json.loads(str(arrays["config"][()]))
    except json.JSONDecodeError as err:
        raise CheckpointError(f"checkpoint {path}: its 'config' is not valid JSON: {err}") from None

    def scalar(key, kind, default=None):
        return kind(arrays[key][()]) if key in arrays else default

    metrics = {key: scalar(key, int if key.endswith("epoch") else float)
               for key in ("top1", "top5", "best_top1", "best_top5", "best_epoch") if key in arrays}
    return Checkpoint(
        path,
        model_state={k[len("model/"):]: v for k, v in arrays.items() if k.startswith("model/")},
        optim_state={k[len("optim/"):]: v for k, v in arrays.items() if k.startswith("optim/")},
        config=config, epoch=scalar("epoch", int, 0), schedule=scalar("schedule", str, ""),
        rng_state=scalar("rng_state", str), metrics=metrics, weights_only=scalar("weights_only", bool, False))


MOMENTUM_KEYS = "optim/momentum."


def save_weights_only(checkpoint_path, out_path):
    """Write ``checkpoint_path`` to ``out_path`` without the optimiser's
    momentum buffers, atomically; ``out_path`` may be ``checkpoint_path``.

    The buffers (one per parameter, as large as the weights) only serve to
    continue training exactly; the weights, BN statistics, settings, epoch,
    accuracies and the optimiser's step count (the PyTorch export's
    ``num_batches_tracked``) are kept.  A checkpoint that already is weights
    only is left untouched (rewriting it would change only its zip dates).

    Returns (out_path, bytes before, bytes after); for an untouched file
    out_path is checkpoint_path and the two sizes are equal (a rewrite in
    place always changes the size: it drops the buffers or adds the
    ``weights_only`` flag).
    """
    source, out = Path(checkpoint_path), Path(out_path)
    ckpt = load_checkpoint(source)  # checks the file before anything is written
    before = source.stat().st_size
    if ckpt.weights_only and out.exists() and out.resolve() == source.resolve():
        return out, before, before
    with np.load(source, allow_pickle=False) as z:
        arrays = {key: z[key] for key in z.files if not key.startswith(MOMENTUM_KEYS)}
    arrays["weights_only"] = np.array(True)
    atomic_savez(out, arrays)
    return out, before, out.stat().st_size


MOMENTUM_FORMAT = "tqref-momentum-1"


def momentum_path(checkpoint_path):
    """The file that ``split_checkpoint`` writes the momentum buffers of
    ``checkpoint_path`` to: ``last.npz`` -> ``last.momentum.npz``."""
    path = Path(checkpoint_path)
    return path.with_name(f"{path.stem}.momentum.npz")


def split_checkpoint(checkpoint_path, out_path):
    """Write ``checkpoint_path`` as two files of about half its size that
    together still resume exactly: ``out_path``, weights only (as
    ``save_weights_only`` writes it), and ``momentum_path(out_path)``, the
    momentum buffers with the epoch and step count they belong to.
    ``out_path`` may be ``checkpoint_path``.

    Why: a run still training must keep its buffers to be resumed, and a
    ResNet-56's full checkpoint (6.8 MB) is larger than a repository may
    take as one file (results/ keeps every file under 5 MB).  ``--resume``
    reads the pair as one checkpoint (``load_momentum``).

    The buffers are written first: a stop between the two writes leaves the
    full checkpoint, which ``--resume`` reads as before.  A weights-only
    ``out_path`` whose momentum file fits it is left as it is.

    Returns (out_path, its momentum file, bytes before, bytes of the two
    files after).
    """
    source, out = Path(checkpoint_path), Path(out_path)
    ckpt = load_checkpoint(source)
    before = source.stat().st_size
    side = momentum_path(out)
    if ckpt.weights_only:
        load_momentum(ckpt)  # raises unless a fitting momentum file lies beside it
        if out.resolve() != source.resolve():
            raise CheckpointError(f"{source} is split already (its momentum buffers are in "
                                  f"{momentum_path(source)}); copy the two files instead")
        return out, side, before, before + side.stat().st_size
    buffers = {k: v for k, v in ckpt.optim_state.items() if k.startswith("momentum.")}
    atomic_savez(side, {"format": np.array(MOMENTUM_FORMAT), "epoch": np.array(ckpt.epoch, dtype=np.int64),
                        "step_count": np.asarray(ckpt.optim_state["step_count"]), **buffers})
    save_weights_only(source, out)
    return out, side, before, out.stat().st_size + side.stat().st_size


def load_momentum(checkpoint, path=None):
    """The momentum buffers that ``split_checkpoint`` moved out of the
    weights-only ``checkpoint`` (a ``Checkpoint``), read from ``path``
    (default ``momentum_path(checkpoint.path)``), as optimiser state keys
    ``momentum.<param>`` -> array.  CheckpointError if the file is missing,
    unreadable, or was split off another epoch or step than the checkpoint's
    (then the pair is not one state and cannot be resumed exactly)."""
    path = Path(path) if path is not None else momentum_path(checkpoint.path)
    if not path.is_file():
        raise CheckpointError(f"{checkpoint.path} holds the weights only and there is no {path} with "
                              f"its momentum buffers (see 'export --format split')")
    arrays = _read_all(path, "momentum file")
    found = str(arrays["format"][()]) if "format" in arrays else "no 'format' key"
    if found != MOMENTUM_FORMAT:
        raise CheckpointError(f"momentum file {path}: expected format {MOMENTUM_FORMAT!r}, found {found}")
    mine = (checkpoint.epoch, int(checkpoint.optim_state.get("step_count", -1)))
    theirs = (int(arrays.get("epoch", -1)), int(arrays.get("step_count", -1)))
    if mine != theirs:
        raise CheckpointError(f"momentum file {path} belongs to epoch {theirs[0]} (step {theirs[1]}), "
                              f"but {checkpoint.path} is epoch {mine[0]} (step {mine[1]}): not one state")
    return {k: v for k, v in arrays.items() if k.startswith("momentum.")}


def load_state_into(model, state, source, saved_model=None):
    """``model.load_state_dict(state)`` with an error that names the file and
    the model the file was saved from."""
    try:
        model.load_state_dict(state)
    except ValueError as err:
        origin = f" (saved from a {saved_model} model)" if saved_model else ""
        raise CheckpointError(f"{source}{origin} does not fit this model: {err}") from None
    return model


def read_weights(path):
    """Model weights from a tqref checkpoint, or from a plain ``.npz`` of a
    state dict (``np.savez(path, **model.state_dict())``).  Returns
    (state dict, model name or None)."""
    path = Path(path)
    try:
        ckpt = load_checkpoint(path)
        return ckpt.model_state, ckpt.config.get("model")
    except CheckpointError as err:
        if "not a tqref checkpoint" not in str(err):
            raise
    with np.load(path, allow_pickle=False) as z:
        return {key: z[key] for key in z.files}, None


def load_model(path):
    """(model in eval mode, Checkpoint) from a checkpoint file."""
    ckpt = load_checkpoint(path)
    try:
        model = model_from_config(ckpt.config)
    except (KeyError, ValueError, TypeError) as err:
        raise CheckpointError(f"checkpoint {path}: its config does not describe a tqref model: {err}") from None
    load_state_into(model, ckpt.model_state, f"checkpoint {path}", ckpt.config.get("model"))
    return model.eval(), ckpt


# ---------------------------------------------------------------- export
def torch_state_dict(model, num_batches_tracked=0):
    """The model's state as PyTorch names it, ternary layers as W_eff = Σ α_k T_k.

    Returns dict name -> float32 array (``num_batches_tracked``: 0-d int64
    for every BatchNorm2d, as a PyTorch BN has)."""
    state = {name: np.asarray(value, dtype=np.float32) for name, value in model.state_dict().items()}
    for name, layer in ternary_layers(model):
        key = f"{name}.weight" if name else "weight"
        w_eff = np.asarray(layer.effective_weight(), dtype=np.float32)
        if w_eff.shape != state[key].shape:
            raise ValueError(f"torch_state_dict: {name}: effective weight {w_eff.shape} "
                             f"does not match the latent weight {state[key].shape}")
        state[key] = w_eff
    for name, module in model.named_modules():
        if type(module).__name__ == "BatchNorm2d":
            state[f"{name}.num_batches_tracked"] = np.array(int(num_batches_tracked), dtype=np.int64)
    return state


def export_torch(checkpoint_path, out_path):
    """Write ``torch_state_dict`` of a checkpoint's model to ``out_path``
    (atomically).  Returns (out_path, number of arrays, model name)."""
    model, ckpt = load_model(checkpoint_path)
    steps = int(ckpt.optim_state.get("step_count", np.array(0))[()]) if ckpt.optim_state else 0
    state = torch_state_dict(model, num_batches_tracked=steps)
    atomic_savez(out_path, state)
    return Path(out_path), len(state), ckpt.config.get("model")
