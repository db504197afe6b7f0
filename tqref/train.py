"""The trainer: the paper's CIFAR-10 recipe, resumable bit for bit.

Defaults are the paper's (``docs/method.md``, "Training recipe"): SGD with Nesterov
momentum 0.9, weight decay 3e-4 on all parameters, batch 128, 200 epochs,
lr 0.1 multiplied by 0.1 at epoch 80, 0.1 at 120 and 0.5 at 160, random crop
+ flip, test evaluation after every epoch.  Every knob is a field of
``TrainConfig``.

One epoch, in order:

    lr = schedule.lr_at(epoch)                     set once per epoch
    for x, y in Batches(shuffled, augmented):      one Generator draws both
        logits = model.forward(x)
        loss, dlogits = softmax_cross_entropy(logits, y)
        model.backward(dlogits); optimizer.step()
    evaluate on the test set (eval mode, batch 256): loss, top-1, top-5
    append one JSON line to RUN_DIR/log.jsonl
    write RUN_DIR/last.npz (and best.npz on a new best top-1), atomically

What a run folder holds:

    config.json   the settings (TrainConfig as JSON)
    log.jsonl     one object per epoch: epoch, lr, train_loss, train_acc, test_loss,
                  test_top1, test_top5, images_per_s, epoch_seconds; for ternary
                  models also sparsity (all layers) and layers: {name: {sparsity,
                  alpha, threshold}}, one list entry per expansion
    last.npz      model, optimiser, epoch, schedule, RNG state, config, accuracies
    best.npz      the same at the epoch of the best test top-1
    result.json   best epoch and top-1, final top-1/top-5, time, images/s

Exact resume: everything that decides the next epoch is in last.npz (weights,
BN statistics, momentum buffers, the Generator's state, the epoch; or in the
pair last.npz + last.momentum.npz that ``export --format split`` makes), so
``Trainer(..., resume=True)`` continues to the same final weights as a run
that was never stopped.  A run killed at any moment loses at most the epoch
in progress; one killed during its first epoch has no last.npz yet, and
resuming it starts it again from its config.json (the same settings and
seed, so the same run).
"""

import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from tqref import io as tio
from tqref.backend import current_backend, get_backend, use_backend
from tqref.data import Batches, load_cifar10
from tqref.functional import softmax_cross_entropy
from tqref.models import MODELS
from tqref.nn import no_grad
from tqref.optim import PAPER_GAMMAS, PAPER_MILESTONES, SGD, CosineLR, LinearWarmup, MultiStepLR
from tqref.validation import NonFiniteError, all_finite


class TrainingDiverged(RuntimeError):
    """The loss or the weights became NaN or infinite."""


@dataclasses.dataclass
class TrainConfig:
    """Every setting of a run; the defaults are the paper's recipe."""

    model: str = "resnet20"
    ternary: bool = False
    t_ex: int = 1                      # residual expansions (Eq. 5); 1 = plain ternary
    variant: str = "paper"             # ternarize_model variant: paper, twn, ttq, binary
    keep_first: bool = False           # leave the first conv full precision (the paper does not)
    keep_last: bool = False            # leave the last linear full precision (the paper does not)
    threshold_rule: str | None = None  # passed to ternarize_model when set
    delta_factors: tuple | None = None  # passed to ternarize_model when set
    epochs: int = 200
    batch_size: int = 128
    eval_batch_size: int = 256
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 3e-4
    schedule: str = "multistep"        # multistep | cosine
    milestones: tuple = PAPER_MILESTONES
    gammas: tuple = PAPER_GAMMAS
    warmup_epochs: int = 0
    augment: bool = True
    train_subset: int | None = None    # first N training images (None: all 50,000)
    test_subset: int | None = None     # first N test images (None: all 10,000)
    seed: int = 0
    init_from: str | None = None       # checkpoint whose weights start the run (fine-tuning)
    data_dir: str | None = None

    def validate(self):
        """Raise ValueError naming the first bad setting; returns self."""
        def positive_int(name, value, allow_none=False):
            if value is None and allow_none:
                return
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
                raise ValueError(f"{name}: expected a positive integer, got {value!r}")

        if self.model not in MODELS:
            raise ValueError(f"unknown model {self.model!r}: choose one of {', '.join(sorted(MODELS))}")
        for name in ("epochs", "batch_size", "eval_batch_size", "t_ex"):
            positive_int(name.replace("_", "-"), getattr(self, name))
        for name in ("train_subset", "test_subset"):
            positive_int(name.replace("_", "-"), getattr(self, name), allow_none=True)
        if isinstance(self.warmup_epochs, bool) or not isinstance(self.warmup_epochs, (int, np.integer)) \
                or self.warmup_epochs < 0:
            raise ValueError(f"warmup-epochs: expected a non-negative integer, got {self.warmup_epochs!r}")
        if not self.ternary and (self.t_ex != 1 or self.keep_first or self.keep_last
                                 or self.variant != "paper"):
            raise ValueError("t-ex, variant, keep-first and keep-last apply to ternary models: add --ternary")
        if self.schedule not in ("multistep", "cosine"):
            raise ValueError(f"schedule: expected 'multistep' or 'cosine', got {self.schedule!r}")
        for name in ("lr", "weight_decay", "momentum"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
                raise ValueError(f"{name.replace('_', '-')}: expected a finite number >= 0, got {v!r}")
        self.make_schedule()  # milestones / gammas checked by MultiStepLR
        return self

    def make_schedule(self):
        """The learning rate as a function of the epoch (``tqref.optim``)."""
        if self.schedule == "cosine":
            sched = CosineLR(self.lr, self.epochs)
        else:
            sched = MultiStepLR(self.lr, tuple(self.milestones), tuple(self.gammas))
        if self.warmup_epochs:
            # set per epoch: epoch k < W trains with lr·(k+1)/(W+1), never 0
            sched = LinearWarmup(sched, self.warmup_epochs, start_factor=1.0 / (self.warmup_epochs + 1))
        return sched

    def describe_schedule(self):
        """``lr 0.1, x0.1 at epoch 80, x0.1 at 120, x0.5 at 160`` and the like."""
        if self.schedule == "cosine":
            text = f"lr {self.lr:g} cosine-annealed to 0 over {self.epochs} epochs"
        else:
            steps = [f"x{g:g} at {'epoch ' if i == 0 else ''}{m}"
                     for i, (m, g) in enumerate(zip(self.milestones, self.gammas)) if m < self.epochs]
            text = ", ".join([f"lr {self.lr:g}"] + steps)
        return text + (f", linear warm-up over {self.warmup_epochs} epochs" if self.warmup_epochs else "")

    def to_dict(self):
        d = dataclasses.asdict(self)
        for key in ("milestones", "gammas", "delta_factors"):
            if d[key] is not None:
                d[key] = list(d[key])
        return d

    # what a run's config.json records beside the settings: the data folder
    # actually used, and the backend that ran the last start or resume (the
    # same math either way, so a run may resume on the other backend)
    RECORDED_BESIDE = ("data_root", "backend")

    @classmethod
    def from_dict(cls, d):
        """The settings in ``d``: a dict of ``to_dict``, or a run's config.json as
        read (its ``RECORDED_BESIDE`` entries are left out).  Raises ValueError
        naming any other key that is not a setting."""
        d = {k: v for k, v in d.items() if k not in cls.RECORDED_BESIDE}
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"TrainConfig: unknown setting(s) {unknown}")
        d = dict(d)
        for key in ("milestones", "gammas", "delta_factors"):
            if d.get(key) is not None:
                d[key] = tuple(d[key])
        return cls(**d)


# ---------------------------------------------------------------- evaluation
def evaluate(model, images, labels, batch_size=256, progress=False):
    """Loss, top-1 and top-5 accuracy of ``model`` in evaluation mode on uint8
    images; the model's previous mode is restored.  Returns a dict."""
    was_training = model.training
    model.eval()
    batches = Batches(images, labels, batch_size, dtype=model.dtype)
    total_loss = correct1 = correct5 = 0.0
    bar = _bar(len(batches), "evaluate", progress)
    try:
        for x, y in batches:
            with no_grad():  # no backward follows: let each activation go after use
                logits = model.forward(x)
            loss, _ = softmax_cross_entropy(logits, y)
            total_loss += loss * len(y)
            correct1 += int(np.sum(logits.argmax(axis=1) == y))
            k = min(5, logits.shape[1])
            top = np.argpartition(-logits, k - 1, axis=1)[:, :k]
            correct5 += int(np.sum(top == y[:, None]))
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
        model.train(was_training)
    n = len(images)
    return {"loss": total_loss / n, "top1": correct1 / n, "top5": correct5 / n}


def ternary_stats(model):
    """Per ternary layer: sparsity (fraction of T = 0), α and Δ, one entry per
    expansion, plus the sparsity of the whole network (first expansion).
    Returns (overall sparsity or None, {layer name: {...}}), ready for JSON:
    α and Δ are floats, or lists (per channel, TTQ's (W_p, W_n))."""
    layers, zeros, total = {}, 0, 0
    for name, layer in tio.ternary_layers(model):
        quantized = layer.quantize()
        layers[name] = tio.to_json_value({"sparsity": [q.sparsity for q in quantized],
                                          "alpha": [q.alpha for q in quantized],
                                          "threshold": [q.threshold for q in quantized]})
        # the whole network's sparsity counts zeros over all its weights (a
        # mean weighted by layer size, not the mean of the layers' sparsities)
        zeros += int(np.sum(quantized[0].codes == 0))
        total += quantized[0].codes.size
    return (zeros / total if total else None), layers


def _bar(total, desc, enabled):
    if not enabled:
        return None
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit="batch", file=sys.stderr, leave=False, dynamic_ncols=True)


# ---------------------------------------------------------------- the trainer
class Trainer:
    """Train ``config`` into ``run_dir``.

    config:   TrainConfig; with resume=True instead None or a dict of settings:
              ``epochs`` (to extend a run) and ``data_dir`` replace the saved
              ones, any other key must equal the saved value
    run_dir:  the run folder; must be absent or empty unless resume=True
    resume:   continue from run_dir/last.npz (a run stopped before its first
              checkpoint: start it again from run_dir/config.json)
    data:     optional dict as returned by ``tqref.data.load_cifar10`` (tests pass
              a small one); loaded from ``config.data_dir`` otherwise
    log:      function printing one line (per epoch summary); progress: tqdm bars

    ``fit()`` trains to ``config.epochs`` and returns the result dict.  Errors
    of input (bad settings, data, checkpoints, an unwritable folder) are raised
    here, in the constructor, before any training.
    """

    def __init__(self, config, run_dir, resume=False, data=None, log=print, progress=True, backend=None):
        self.run_dir = Path(run_dir)
        # the backend that trains (tqref.backend): given, else the current one
        self.backend = get_backend(backend) if backend is not None else current_backend()
        self.log, self.progress = log, progress
        self.resume = resume
        self._created_dir = False
        self.checkpoint = None  # the checkpoint resumed from, if any
        if resume:
            self._prepare_resume(config)
        else:
            self.config = config.validate()
            self._prepare_new_dir()
        try:
            with use_backend(self.backend):  # building a ternary model already quantizes once
                self._setup(data)
        except BaseException:
            self._cleanup_failed_start()
            raise

    # ------------------------------------------------------------ setup
    def _prepare_new_dir(self):
        d = self.run_dir
        if d.exists() and (not d.is_dir() or any(d.iterdir())):
            raise FileExistsError(
                f"{d} already exists and is not empty: it may hold a run. Continue it with --resume, "
                f"or choose another --out (nothing was changed)")
        self._created_dir = tio.check_writable_dir(d, "run folder")

    def _prepare_resume(self, config):
        d = self.run_dir
        last, saved_config = d / "last.npz", d / "config.json"
        if last.is_file():
            tio.check_writable_dir(d, "run folder")
            self.checkpoint = tio.load_checkpoint(last)
            if self.checkpoint.weights_only and tio.momentum_path(last).is_file():
                # split by 'export --format split': the buffers lie beside it
                self.checkpoint.optim_state.update(tio.load_momentum(self.checkpoint))
            elif self.checkpoint.weights_only:
                # without the momentum buffers the next step would differ from
                # the one the run would have taken: not a resume, a new run
                raise tio.CheckpointError(
                    f"--resume: {last} holds the weights only (its momentum buffers were left out by "
                    f"'export --format weights', as in a published run, and there is no "
                    f"{tio.momentum_path(last).name} beside it), so the run cannot continue "
                    f"exactly. Start a new run from it instead: --init-from {last} --out NEW_FOLDER")
            settings, source = self.checkpoint.config, f"checkpoint {last}"
        elif saved_config.is_file():
            # The run stopped before its first checkpoint: nothing was trained, so
            # resuming it is starting it again from its saved settings (and seed),
            # which gives the run it would have been.
            tio.check_writable_dir(d, "run folder")
            self.checkpoint = None
            try:
                settings = json.loads(saved_config.read_text())
            except (OSError, ValueError) as err:
                raise tio.CheckpointError(f"--resume: {saved_config} is not readable JSON: {err}") from None
            source = str(saved_config)
        else:
            raise FileNotFoundError(f"--resume: no checkpoint {last} and no {saved_config} of a "
                                    f"started run; nothing to resume")
        try:
            saved = TrainConfig.from_dict(settings)
        except (TypeError, ValueError, AttributeError) as err:
            raise tio.CheckpointError(f"{source}: its config is not a TrainConfig: {err}") from None
        overrides = config.to_dict() if isinstance(config, TrainConfig) else dict(config or {})
        for key in ("epochs", "data_dir"):  # the two settings a resumed run may change
            if overrides.get(key) is not None:
                setattr(saved, key, overrides.pop(key))
        def same(a, b):  # compare as JSON sees them: (80, 120) == [80, 120]
            return json.dumps(a) == json.dumps(b)
        differ = {k: v for k, v in overrides.items() if v is not None and not same(getattr(saved, k, None), v)}
        if differ:
            was = ", ".join(f"{k}={getattr(saved, k, None)!r} (asked {v!r})" for k, v in differ.items())
            raise ValueError(f"--resume continues the run in {d} with its own settings, which differ "
                             f"from the ones given: {was}. Only --epochs and --data-dir may change; "
                             f"start a new run (another --out) to change the others")
        self.config = saved.validate()

    def _cleanup_failed_start(self):
        if self._created_dir and self.run_dir.is_dir() and not any(self.run_dir.iterdir()):
            self.run_dir.rmdir()

    def _setup(self, data):
        c = self.config
        if data is None:
            data = load_cifar10(c.data_dir, download=True, verbose=True)
        self.data_root = str(data.get("root", ""))
        self.train_images, self.train_labels = _subset(data, "train", c.train_subset)
        self.test_images, self.test_labels = _subset(data, "test", c.test_subset)

        seed_model, seed_data = np.random.SeedSequence(c.seed).spawn(2)
        self.model = tio.model_from_config({**c.to_dict(), "seed": np.random.default_rng(seed_model)})
        self.model.train()
        self.schedule = c.make_schedule()
        self.optimizer = SGD(self.model.parameters_and_gradients(), lr=c.lr, momentum=c.momentum,
                             nesterov=c.nesterov, weight_decay=c.weight_decay,
                             lr_multipliers=self.model.lr_multipliers())
        self.rng = np.random.default_rng(seed_data)
        self.start_epoch = 0
        self.best = {"best_top1": -1.0, "best_top5": 0.0, "best_epoch": 0}

        if self.checkpoint is not None:
            ck = self.checkpoint
            tio.load_state_into(self.model, ck.model_state, f"checkpoint {ck.path}", ck.config.get("model"))
            try:
                self.optimizer.load_state_dict(ck.optim_state)
            except (KeyError, ValueError, TypeError) as err:
                raise tio.CheckpointError(f"checkpoint {ck.path}: optimiser state does not fit: {err}") from None
            if ck.rng_state is None:
                raise tio.CheckpointError(f"checkpoint {ck.path}: holds no RNG state; cannot resume exactly")
            self.rng = tio.rng_from_json(ck.rng_state)
            self.start_epoch = ck.epoch
            self.best.update({k: ck.metrics[k] for k in self.best if k in ck.metrics})
            self._trim_log(ck.epoch)
        else:
            if c.init_from:
                state, saved_model = tio.read_weights(c.init_from)
                tio.load_state_into(self.model, state, f"--init-from {c.init_from}", saved_model)
            if self.resume:  # restarted before its first checkpoint: drop a log line of that epoch
                self._trim_log(0)

        # written last, so a start that fails leaves an empty folder; rewritten on
        # resume, where --epochs may have extended the run
        tio.atomic_write_text(self.run_dir / "config.json",
                              json.dumps({**c.to_dict(), "data_root": self.data_root,
                                          "backend": self.backend.name}, indent=2) + "\n")

    def _trim_log(self, epoch):
        """Drop log lines of epochs after the checkpoint (a run killed between
        writing its log line and its checkpoint), so the log matches the weights."""
        path = self.run_dir / "log.jsonl"
        if not path.is_file():
            return
        kept = [json.dumps(r) for r in read_log(self.run_dir) if r.get("epoch", 0) <= epoch]
        tio.atomic_write_text(path, "".join(line + "\n" for line in kept))

    def describe(self):
        c = self.config
        kind = (f"ternary (t_ex={c.t_ex}{'' if c.variant == 'paper' else ', ' + c.variant})"
                if c.ternary else "full precision")
        return (f"train: {c.model} {kind}, {self.model.num_parameters():,} parameters; "
                f"{len(self.train_images):,} training / {len(self.test_images):,} test images"
                f"{' from ' + self.data_root if self.data_root else ''};\n       {c.epochs} epochs, batch "
                f"{c.batch_size}, {c.describe_schedule()}, SGD momentum {c.momentum:g}"
                f"{' Nesterov' if c.nesterov else ''}, weight decay {c.weight_decay:g}"
                f"{'' if c.augment else ', no augmentation'}"
                f"{', initialised from ' + c.init_from if c.init_from and self.start_epoch == 0 else ''};\n"
                f"       backend {self.backend.name}, run folder {self.run_dir}")

    # ------------------------------------------------------------ training
    def fit(self, on_epoch_end=None):
        """Train from ``start_epoch`` to ``config.epochs``.  ``on_epoch_end(epoch,
        record)`` is called after each epoch's checkpoint is written.
        Returns the result dict (also written to run_dir/result.json)."""
        c = self.config
        t0 = time.perf_counter()
        if self.start_epoch >= c.epochs:
            self.log(f"the run in {self.run_dir} already has {self.start_epoch} epochs (asked: {c.epochs})")
        with use_backend(self.backend):
            for epoch in range(self.start_epoch, c.epochs):
                record = self.train_epoch(epoch)
                if on_epoch_end is not None:
                    on_epoch_end(epoch + 1, record)
        return self._write_result(time.perf_counter() - t0)

    def train_epoch(self, epoch):
        """One epoch (0-based ``epoch``): train, evaluate, log, checkpoint."""
        c = self.config
        lr = self.schedule.lr_at(epoch)
        self.optimizer.lr = lr
        self.model.train()
        batches = Batches(self.train_images, self.train_labels, c.batch_size, rng=self.rng,
                          shuffle=True, augment=c.augment, dtype=self.model.dtype)
        bar = _bar(len(batches), f"epoch {epoch + 1}/{c.epochs}", self.progress)
        total_loss = correct = seen = 0
        start = time.perf_counter()
        try:
            for step, (x, y) in enumerate(batches):
                try:
                    logits = self.model.forward(x)
                except NonFiniteError as err:
                    # the batch is finite (it comes from uint8), so a layer that finds NaN or
                    # inf in its input (tqref.validation.check_array) saw activations overflow
                    self._diverged(f"an activation overflowed ({err})", epoch, step, len(batches))
                loss, dlogits = softmax_cross_entropy(logits, y)
                if not math.isfinite(loss):
                    self._diverged(f"the training loss became {loss}", epoch, step, len(batches))
                self.model.backward(dlogits)
                self.optimizer.step()
                if not all(all_finite(p) for _, p, _ in self.optimizer.params):
                    self._diverged("a weight became NaN or infinite", epoch, step, len(batches))
                total_loss += loss * len(y)
                correct += int(np.sum(logits.argmax(axis=1) == y))
                seen += len(y)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{total_loss / seen:.3f}", acc=f"{correct / seen:.3f}",
                                    img_s=f"{seen / (time.perf_counter() - start):.0f}", refresh=False)
        finally:
            if bar is not None:
                bar.close()
        train_seconds = time.perf_counter() - start
        test = evaluate(self.model, self.test_images, self.test_labels, c.eval_batch_size, self.progress)
        record = {"epoch": epoch + 1, "lr": lr,
                  "train_loss": total_loss / seen, "train_acc": correct / seen,
                  "test_loss": test["loss"], "test_top1": test["top1"], "test_top5": test["top5"],
                  "images_per_s": seen / train_seconds,
                  "epoch_seconds": time.perf_counter() - start}
        if c.ternary:
            record["sparsity"], record["layers"] = ternary_stats(self.model)
        self._save(epoch + 1, record)
        self.log(_epoch_line(record, c.epochs))
        return record

    def _diverged(self, what, epoch, step, steps):
        last = self.run_dir / "last.npz"
        kept = (f"{last} still holds the last good state (epoch {tio.load_checkpoint(last).epoch})"
                if last.is_file() else "no checkpoint was written yet")
        raise TrainingDiverged(
            f"training diverged: {what} at epoch {epoch + 1}, step {step + 1}/{steps} "
            f"(lr {self.optimizer.lr:g}); stopped. {kept}. Try a smaller --lr or --warmup-epochs.")

    def _save(self, epoch, record):
        # log line first, then the checkpoint: a crash in between leaves a log line
        # for an epoch the checkpoint lacks, and resume trims it (see _trim_log)
        with open(self.run_dir / "log.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
        if record["test_top1"] > self.best["best_top1"]:
            self.best = {"best_top1": record["test_top1"], "best_top5": record["test_top5"],
                         "best_epoch": epoch}
            new_best = True
        else:
            new_best = False
        metrics = {"top1": record["test_top1"], "top5": record["test_top5"], **self.best}
        args = dict(optimizer=self.optimizer, epoch=epoch, schedule=self.schedule, rng=self.rng,
                    metrics=metrics)
        config = self.config.to_dict()
        tio.save_checkpoint(self.run_dir / "last.npz", self.model, config, **args)
        # the full checkpoint supersedes the pair a resumed split one was read from
        tio.momentum_path(self.run_dir / "last.npz").unlink(missing_ok=True)
        if new_best:
            tio.save_checkpoint(self.run_dir / "best.npz", self.model, config, **args)

    def _write_result(self, seconds):
        records = read_log(self.run_dir)
        if not records:
            return {}
        final = records[-1]
        result = {"model": self.config.model, "ternary": self.config.ternary, "t_ex": self.config.t_ex,
                  "epochs": final["epoch"],
                  "best_epoch": self.best["best_epoch"], "best_top1": self.best["best_top1"],
                  "best_top5": self.best["best_top5"],
                  "final_top1": final["test_top1"], "final_top5": final["test_top5"],
                  "train_images": len(self.train_images), "test_images": len(self.test_images),
                  "wall_seconds": sum(r["epoch_seconds"] for r in records),
                  "wall_seconds_this_session": seconds,
                  "images_per_s": float(np.mean([r["images_per_s"] for r in records]))}
        if "sparsity" in final:
            result["final_sparsity"] = final["sparsity"]
        tio.atomic_write_text(self.run_dir / "result.json", json.dumps(result, indent=2) + "\n")
        self.log(f"done: best test top-1 {result['best_top1']:.4f} at epoch {result['best_epoch']}, "
                 f"final {result['final_top1']:.4f} (top-5 {result['final_top5']:.4f}); "
                 f"{result['wall_seconds']:.0f} s, {result['images_per_s']:.0f} images/s; "
                 f"results in {self.run_dir}")
        return result


def _subset(data, split, n):
    images, labels = data[f"{split}_images"], data[f"{split}_labels"]
    if n is None:
        return images, labels
    if n > len(images):
        raise ValueError(f"{split}-subset: asked for {n} images, but the {split} set has {len(images)}")
    return images[:n], labels[:n]


def _epoch_line(r, epochs):
    line = (f"epoch {r['epoch']:3d}/{epochs}  lr {r['lr']:.4g}  train loss {r['train_loss']:.4f} "
            f"acc {r['train_acc']:.4f}  test loss {r['test_loss']:.4f} top-1 {r['test_top1']:.4f} "
            f"top-5 {r['test_top5']:.4f}")
    if "sparsity" in r and r["sparsity"] is not None:
        line += f"  sparsity {r['sparsity']:.3f}"
    return line + f"  ({r['images_per_s']:.0f} images/s, {r['epoch_seconds']:.0f} s)"


def read_log(run_dir):
    """The records of ``run_dir/log.jsonl`` (a list of dicts, one per epoch)."""
    path = Path(run_dir) / "log.jsonl"
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut short by a killed run
            continue
    return records


def train(config, run_dir, resume=False, **kwargs):
    """Build a Trainer and run it: ``train(TrainConfig(epochs=2), "runs/x")``."""
    trainer = Trainer(config, run_dir, resume=resume, **kwargs)
    trainer.log(trainer.describe())
    return trainer.fit()
