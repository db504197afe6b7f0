"""A grid of training runs, run (and resumed) on Dask distributed.

    python -m tqref sweep results/resnet20-short30.toml --dry-run   # what would run, each run's state
    python -m tqref sweep results/resnet20-short30.toml             # run or resume them all
    python -m tqref sweep SPEC --scheduler tcp://host:8786          # the same runs on a cluster
    python -m tqref sweep SPEC --publish       # finished runs weights only (+ packed), others split

A *spec* is a small TOML file.  Its grid is a product of axes; each point is
an ordinary ``python -m tqref train`` run folder, named from its settings::

    out = "."                                  # run folders go here (relative to the spec)
    name = "{model}-{quant}-{schedule}-s{seed}"   # the default for these axes

    [settings]                                 # shared by every run (TrainConfig fields)
    weight_decay = 3e-4

    [schedules.short30]                        # named groups of settings, one axis value each
    epochs = 30
    milestones = [12, 18, 24]
    gammas = [0.1, 0.1, 0.5]

    [grid]
    model = ["resnet20"]
    quant = ["fp", "ternary", "tex2"]          # fp, ternary, tex2, tex4 are built in;
    schedule = ["short30"]                     #   [quants.NAME] tables add others
    seed = [0, 1, 2, 3]

A ``[names]`` table gives single runs another folder name, e.g. runs made
before the spec existed: ``"resnet20-fp-paper200-s0" = "resnet20-fp"``.

An axis is ``quant`` (a name from ``[quants]`` or the built-ins), ``schedule``
(a name from ``[schedules]``) or any ``TrainConfig`` field (``model``,
``seed``, ``lr``, ...).  The runs are the product of the axes, in the order
written (the last axis varies fastest).

What a sweep does with each run folder (``run_state``):

    result.json present               finished: skipped
    config.json present               started: resumed from last.npz (``train --resume``), so a
                                      run stopped by a reboot, a session's end or a dead worker
                                      loses at most the epoch in progress
    neither                           started from scratch
    config.json with other settings   an error before anything runs (another run owns the name)

How the runs are executed: one Dask task per unfinished run.  By default a
``LocalCluster`` with one single-threaded worker process per core starts and
stops with the command, so nothing extra runs on a laptop.  With
``--scheduler ADDRESS`` the same tasks go to a running cluster: start a
scheduler (``dask scheduler``) and, on every machine, workers that see the
run folders at the same path (shared storage)::

    dask worker tcp://host:8786 --nworkers 2 --nthreads 1

(A Dask nanny gives its workers ``MALLOC_TRIM_THRESHOLD_=65536``, which
makes a tqref training step about 35 % slower, ``benchmarks/malloc_trim.py``; the
local cluster is started without it.  For ``dask worker``, put
``distributed: {nanny: {pre-spawn-environ: {MALLOC_TRIM_THRESHOLD_: null}}}``
in a Dask config file, e.g. ``~/.config/dask/tqref.yaml``; a run whose worker
has the variable says so in its ``train.log``.)

(dask-jobqueue's ``SLURMCluster`` / ``PBSCluster`` start such workers as batch
jobs; pass their scheduler's address).  A worker that dies takes its task
with it; the scheduler gives the task to another worker, which resumes the
run from its last checkpoint.  Because ``train --resume`` continues a run
exactly (tests/test_sweep.py kills a worker in the middle of a run), the
final weights are bit-identical to those of a run that was never stopped, as
long as every worker runs the same code with the same number of threads.
Do not point two sweeps at the same run folders at once.

Each run writes its per-epoch lines to ``RUN_DIR/train.log``.
"""

import dataclasses
import itertools
import json
import logging
import os
import string
import sys
import time
from pathlib import Path

# Quantization settings by name; a spec's [quants.NAME] tables add or replace them.
BUILTIN_QUANTS = {
    "fp": {"ternary": False},
    "ternary": {"ternary": True, "t_ex": 1},
    "tex2": {"ternary": True, "t_ex": 2},
    "tex4": {"ternary": True, "t_ex": 4},
}

SPEC_KEYS = ("out", "name", "names", "settings", "schedules", "quants", "grid")
# settings a spec may not set: where the data is belongs to the machine, not the grid
MACHINE_SETTINGS = ("data_dir",)


class SpecError(ValueError):
    """A sweep spec that cannot be read or expanded; the message names the file and the key."""


@dataclasses.dataclass
class SweepRun:
    """One point of the grid: its folder name, its folder and its train settings."""

    name: str
    folder: Path
    settings: dict          # TrainConfig fields (JSON-like values)
    axes: dict              # the axis values that chose it, e.g. {"quant": "tex2", "seed": 1}

    def command(self):
        """The equivalent ``python -m tqref train`` command line (a string)."""
        return "python -m tqref train " + " ".join(_flags(self.settings)) + f" --out {self.folder}"


@dataclasses.dataclass
class Spec:
    path: Path
    out: Path
    runs: list              # [SweepRun], in grid order


# ---------------------------------------------------------------- the spec
def load_spec(path, out=None):
    """Read a TOML spec and expand its grid.  Returns a ``Spec``.

    Raises FileNotFoundError for a missing file and SpecError (a ValueError)
    naming the file and the key for anything else wrong: unknown keys, an
    unknown quantization or schedule name, a setting ``TrainConfig`` rejects,
    a name template that does not tell two runs apart.  ``out`` (a folder)
    replaces the spec's own ``out``."""
    import tomllib

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"sweep: spec {path} not found (expected a TOML file, see "
                                f"'python -m tqref sweep --help')")
    try:
        raw = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise SpecError(f"sweep: {path}: not valid TOML: {err}") from None
    if out is not None:
        raw["out"] = str(Path(out).resolve())
    return expand_spec(raw, path)


def merge_specs(specs):
    """One Spec of the runs of several, in order; a folder may appear once only."""
    runs, seen = [], {}
    for spec in specs:
        for run in spec.runs:
            if run.folder in seen:
                raise SpecError(f"sweep: {spec.path} and {seen[run.folder]} both have a run in {run.folder}")
            seen[run.folder] = spec.path
            runs.append(run)
    outs = {spec.out for spec in specs}
    return Spec(Path(", ".join(str(s.path) for s in specs)), outs.pop() if len(outs) == 1 else
                Path(", ".join(sorted(map(str, outs)))), runs)


def expand_spec(raw, path=Path("<spec>")):
    """The ``Spec`` of a parsed TOML document ``raw`` (a dict) read from ``path``."""
    from tqref.train import TrainConfig

    def fail(message):
        raise SpecError(f"sweep: {path}: {message}")

    unknown = sorted(set(raw) - set(SPEC_KEYS))
    if unknown:
        fail(f"unknown key(s) {unknown}; a spec has {', '.join(SPEC_KEYS)}")
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    grid = raw.get("grid")
    if not isinstance(grid, dict) or not grid:
        fail("expected a [grid] table with at least one axis, e.g. seed = [0, 1, 2]")
    quants = {**BUILTIN_QUANTS, **_table(raw, "quants", fail)}
    schedules = _table(raw, "schedules", fail)
    common = raw.get("settings", {})
    if not isinstance(common, dict):
        fail(f"[settings]: expected a table of train settings, found {common!r}")
    for where, group in [("settings", common)] + [(f"quants.{k}", v) for k, v in quants.items()] + \
                        [(f"schedules.{k}", v) for k, v in schedules.items()]:
        if not isinstance(group, dict):
            fail(f"[{where}]: expected a table of train settings, found {group!r}")
        bad = sorted(set(group) - fields)
        if bad:
            fail(f"[{where}]: unknown setting(s) {bad}; settings are TrainConfig's fields "
                 f"({', '.join(sorted(fields))})")
        taken = sorted(set(group) & set(MACHINE_SETTINGS))
        if taken:
            fail(f"[{where}]: {taken} belong to the machine, not the spec: pass --data-dir or set TQREF_DATA")

    axes = []
    for axis, values in grid.items():
        if axis not in fields and axis not in ("quant", "schedule"):
            fail(f"[grid]: unknown axis {axis!r}; an axis is quant, schedule or a train setting")
        if axis in MACHINE_SETTINGS:
            fail(f"[grid]: {axis!r} belongs to the machine, not the spec")
        if not isinstance(values, list) or not values:
            fail(f"[grid] {axis}: expected a non-empty list of values, found {values!r}")
        if len(set(map(json.dumps, values))) != len(values):
            fail(f"[grid] {axis}: a value is listed twice: {values!r}")
        names = quants if axis == "quant" else schedules if axis == "schedule" else None
        if names is not None:
            for v in values:
                if v not in names:
                    fail(f"[grid] {axis}: unknown name {v!r}; defined: {', '.join(sorted(names)) or 'none'}"
                         + (f" (add a [{axis}s.{v}] table)" if isinstance(v, str) else ""))
        axes.append((axis, values))

    template = raw.get("name", _default_name([a for a, _ in axes]))
    if not isinstance(template, str):
        fail(f"name: expected a string such as '{{model}}-{{quant}}-s{{seed}}', found {template!r}")
    used = {f for _, f, _, _ in string.Formatter().parse(template) if f}
    missing = sorted(used - {a for a, _ in axes})
    if missing:
        fail(f"name {template!r}: {missing} are not axes of [grid]")
    renamed = raw.get("names", {})
    if not isinstance(renamed, dict) or not all(isinstance(v, str) for v in renamed.values()):
        fail(f"[names]: expected a table of folder names (template name = \"folder\"), found {renamed!r}")
    renamed = dict(renamed)
    out = raw.get("out", ".")
    if not isinstance(out, str):
        fail(f"out: expected a folder (a string), found {out!r}")
    out_dir = (path.parent / out).resolve() if not Path(out).is_absolute() else Path(out)

    runs, seen = [], {}
    for combo in itertools.product(*[values for _, values in axes]):
        chosen = dict(zip([a for a, _ in axes], combo))
        settings = dict(common)
        for axis, value in chosen.items():
            if axis == "quant":
                settings.update(quants[value])
            elif axis == "schedule":
                settings.update(schedules[value])
            else:
                settings[axis] = value
        name = template.format(**chosen)
        name = renamed.pop(name, name)
        if "/" in name or name in ("", ".", ".."):
            fail(f"name {template!r} gives {name!r}, which is not a folder name")
        if name in seen:
            fail(f"name {template!r} gives {name!r} to two runs ({seen[name]} and {chosen}); "
                 f"add the axes that differ to the name")
        seen[name] = chosen
        try:
            config = TrainConfig.from_dict(settings).validate()
        except (TypeError, ValueError) as err:
            fail(f"run {name}: {err}")
        runs.append(SweepRun(name, out_dir / name, _settings_of(config), chosen))
    if renamed:
        fail(f"[names]: {sorted(renamed)} are not names of runs of the grid")
    return Spec(path, out_dir, runs)


def _default_name(axes):
    """``{model}-{quant}-{schedule}-s{seed}`` for those axes; other axes as ``lr{lr}``."""
    order = ["model", "quant", "schedule"] + [a for a in axes if a not in ("model", "quant", "schedule", "seed")]
    parts = [f"{{{a}}}" if a in ("model", "quant", "schedule") else f"{a.replace('_', '')}{{{a}}}"
             for a in order if a in axes]
    return "-".join(parts + (["s{seed}"] if "seed" in axes else []))


def _table(raw, key, fail):
    value = raw.get(key, {})
    if not isinstance(value, dict):
        fail(f"[{key}]: expected a table of named settings, found {value!r}")
    return value


def _settings_of(config):
    """The settings of a TrainConfig that describe the run (the machine's data folder left out)."""
    d = config.to_dict()
    for key in MACHINE_SETTINGS:
        d.pop(key, None)
    return d


def _flags(settings):
    """``train`` flags for the settings that differ from TrainConfig's defaults."""
    from tqref.train import TrainConfig
    default = TrainConfig().to_dict()
    flags = []
    for key, value in settings.items():
        if json.dumps(default.get(key)) == json.dumps(value):
            continue
        flag = "--" + key.replace("_", "-")
        if key == "nesterov":
            flags.append("--no-nesterov")
        elif key == "augment":
            flags.append("--no-augment")
        elif isinstance(value, bool):
            flags.append(flag)
        elif isinstance(value, list):
            flags.append(flag + " " + " ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value))
        else:
            flags.append(f"{flag} {value:g}" if isinstance(value, float) else f"{flag} {value}")
    return flags


# ---------------------------------------------------------------- state of a run
def run_state(run):
    """Where ``run`` stands, read from its folder: a dict with

        state    "finished", "started", "new" or "conflict"
        epoch    epochs in its log (0 for a new run), epochs (planned)
        detail   for "conflict": the settings that differ from the spec's
    """
    from tqref.train import TrainConfig, read_log

    folder, planned = run.folder, run.settings["epochs"]
    config_path = folder / "config.json"
    if not config_path.is_file():
        if folder.is_dir() and any(folder.iterdir()):
            return {"state": "conflict", "epoch": 0, "epochs": planned,
                    "detail": f"{folder} holds files but no config.json"}
        return {"state": "new", "epoch": 0, "epochs": planned, "detail": ""}
    try:
        saved = _settings_of(TrainConfig.from_dict(json.loads(config_path.read_text())))
    except (OSError, ValueError, TypeError) as err:
        return {"state": "conflict", "epoch": 0, "epochs": planned, "detail": f"{config_path}: {err}"}
    differ = {k: (saved.get(k), v) for k, v in run.settings.items()
              if k != "epochs" and json.dumps(saved.get(k)) != json.dumps(v)}
    records = read_log(folder)
    epoch = records[-1]["epoch"] if records else 0
    if differ:
        detail = ", ".join(f"{k}: folder {a!r}, spec {b!r}" for k, (a, b) in differ.items())
        return {"state": "conflict", "epoch": epoch, "epochs": planned, "detail": detail}
    if (folder / "result.json").is_file() and epoch >= planned:
        return {"state": "finished", "epoch": epoch, "epochs": planned, "detail": ""}
    return {"state": "started", "epoch": epoch, "epochs": planned, "detail": ""}


def format_states(spec, states=None):
    """A text table of the runs: name, state, epoch k/N (one line each)."""
    states = states or [run_state(r) for r in spec.runs]
    width = max(len(r.name) for r in spec.runs)
    lines = [f"{'run':<{width}}  {'state':<9}  epoch"]
    for run, s in zip(spec.runs, states):
        lines.append(f"{run.name:<{width}}  {s['state']:<9}  {s['epoch']}/{s['epochs']}"
                     + (f"  ({s['detail']})" if s["detail"] else ""))
    counts = {k: sum(s["state"] == k for s in states) for k in ("finished", "started", "new", "conflict")}
    lines.append(", ".join(f"{n} {k}" for k, n in counts.items() if n) + f" of {len(states)} runs in {spec.out}")
    return "\n".join(lines)


# ---------------------------------------------------------------- one run (a Dask task)
def train_run(folder, settings, data_dir=None, threads=1):
    """Train (or resume, or skip) the run in ``folder``: the body of one task.

    Runs on a worker.  ``threads`` sets Numba's (and so tqref's) thread count
    for the run, ``data_dir`` where the worker finds CIFAR-10 (None: its
    ``TQREF_DATA`` or cache).  Lines go to ``folder/train.log``.
    Returns ``{"run": folder, "state": ..., "final_top1": ..., "host": ...}``."""
    import socket

    import numba

    from tqref.train import TrainConfig, Trainer

    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if (folder / "result.json").is_file():
        return {"run": str(folder), "state": "finished", **_final(folder), "host": socket.gethostname()}
    lines = []  # the Trainer is built before train.log exists: a new run needs an empty folder

    def log(line):
        lines.append(line)

    if (folder / "config.json").is_file():
        trainer = Trainer({"epochs": settings["epochs"], "data_dir": data_dir}, folder, resume=True,
                          log=log, progress=False)
        log(f"resuming after epoch {trainer.start_epoch}")
    else:
        trainer = Trainer(TrainConfig.from_dict({**settings, "data_dir": data_dir}), folder,
                          log=log, progress=False)
    log(trainer.describe())
    if os.environ.get("MALLOC_TRIM_THRESHOLD_"):
        log(f"note: MALLOC_TRIM_THRESHOLD_={os.environ['MALLOC_TRIM_THRESHOLD_']} in this worker's environment "
            f"(a Dask nanny's default) makes a training step about 35 % slower (benchmarks/malloc_trim.py); "
            f"see tqref/sweep.py for starting workers without it")
    with open(folder / "train.log", "a", buffering=1) as log_file:
        log_file.write(f"# {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} on {socket.gethostname()} "
                       f"pid {os.getpid()}, {threads} thread(s)\n" + "".join(f"{line}\n" for line in lines))
        trainer.log = lambda line: log_file.write(f"{line}\n")
        trainer.fit()
    return {"run": str(folder), "state": "trained", **_final(folder), "host": socket.gethostname()}


def _final(folder):
    try:
        result = json.loads((Path(folder) / "result.json").read_text())
    except (OSError, ValueError):
        return {}
    return {"final_top1": result.get("final_top1"), "best_top1": result.get("best_top1")}


# ---------------------------------------------------------------- the sweep
def queue_order(runs, states):
    """The unfinished runs (``runs`` with their ``run_state`` dicts), in the order a
    sweep hands them to its workers: started runs first, fewest epochs left first
    (a run near its end gives a finished result soonest, and a restarted sweep
    does not leave half-done runs waiting behind new ones), then new runs in the
    spec's order.  Runs in conflict are left out (``run_sweep`` refuses them)."""
    started = [(s["epochs"] - s["epoch"], i) for i, s in enumerate(states) if s["state"] == "started"]
    new = [i for i, s in enumerate(states) if s["state"] == "new"]
    return [runs[i] for _, i in sorted(started)] + [runs[i] for i in new]


def run_sweep(spec, *, scheduler=None, workers=None, threads=1, data_dir=None, dry_run=False, log=print):
    """Run every unfinished run of ``spec`` (a Spec or a path) on Dask.

    scheduler:  None for a LocalCluster started here (``workers`` processes, default one
                per core, ``threads`` threads each), or the address of a running scheduler
    data_dir:   where workers find CIFAR-10 (default: each worker's TQREF_DATA or cache)
    dry_run:    only print the state table and the train commands

    Returns the list of task results (empty for a dry run).  Raises SpecError
    before anything runs when a folder holds a run with other settings."""
    if not isinstance(spec, Spec):
        spec = load_spec(spec)
    states = [run_state(r) for r in spec.runs]
    log(format_states(spec, states))
    conflicts = [(r, s) for r, s in zip(spec.runs, states) if s["state"] == "conflict"]
    if conflicts:
        raise SpecError("sweep: " + "; ".join(f"{r.folder} holds another run ({s['detail']})"
                                              for r, s in conflicts)
                        + ". Move those folders or change the spec's 'out' or 'name'")
    todo = queue_order(spec.runs, states)
    if dry_run:
        for run, s in zip(spec.runs, states):
            if s["state"] != "finished":
                log(f"resume:  python -m tqref train --out {run.folder} --resume" if s["state"] == "started"
                    else f"start:   {run.command()}")
        return []
    if not todo:
        log("nothing to do: every run has finished")
        return []
    if data_dir is not None:
        data_dir = str(Path(data_dir).resolve())
    try:
        from dask.distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise ImportError("sweep: running runs needs Dask distributed: pip install 'tqref[sweep]' "
                          "(or pip install -r requirements.txt); --dry-run works without it") from None

    cluster = None
    if scheduler is None:
        n = workers or os.cpu_count() or 1
        import dask
        # A Dask nanny starts its workers with MALLOC_TRIM_THRESHOLD_=65536, which turns off
        # glibc's dynamic mmap threshold: every large array is then mapped afresh and a
        # training step takes about 35 % longer (benchmarks/malloc_trim.py).  Not here.
        dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None})
        # one process per worker, single-threaded: each run is one task, and tqref
        # parallelises inside a run only if threads > 1
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None,
                               silence_logs=logging.WARNING,
                               env={"NUMBA_NUM_THREADS": str(threads), "OMP_NUM_THREADS": str(threads),
                                    "OPENBLAS_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)})
        client = Client(cluster)
        log(f"sweep: {len(todo)} run(s) on a local cluster of {n} worker(s), {threads} thread(s) each")
    else:
        client = Client(scheduler)
        log(f"sweep: {len(todo)} run(s) on the cluster at {scheduler}")
    results = []
    try:
        # Dask runs higher priorities first: the runs in queue_order's order
        futures = {client.submit(train_run, str(r.folder), r.settings, data_dir, threads, key=f"train-{r.name}",
                                 pure=False, priority=len(todo) - i): r for i, r in enumerate(todo)}
        for future in as_completed(futures):
            run = futures[future]
            try:
                result = future.result()
            except Exception as err:  # noqa: BLE001 - one failed run must not stop the others
                log(f"{run.name}: failed: {type(err).__name__}: {err} (see {run.folder / 'train.log'})")
                results.append({"run": str(run.folder), "state": "failed", "error": str(err)})
                continue
            top1 = result.get("final_top1")
            log(f"{run.name}: {result['state']}" + (f", final top-1 {top1:.4f}" if top1 is not None else ""))
            results.append(result)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    log(format_states(spec))
    return results


# ---------------------------------------------------------------- publishing run folders
def publish(spec, log=print):
    """Ready the spec's run folders for a repository whose files must stay small.

    finished run      ``last.npz`` and ``best.npz`` rewritten weights only (the momentum
                      buffers serve ``--resume`` alone and double the file); a ternary
                      ResNet also gets ``final.packed.npz`` (2-bit codes, α, BN folded)
    started run       ``last.npz`` split in two (weights only + ``last.momentum.npz``,
                      which ``--resume`` reads as one) and ``best.npz`` weights only
    Run it only while no sweep is training these folders.  Returns the files written."""
    from tqref import io as tio
    written = []
    for run in spec.runs:
        state = run_state(run)["state"]
        last, best = run.folder / "last.npz", run.folder / "best.npz"
        if state == "finished":
            packed = run.folder / "final.packed.npz"
            # the packed engine runs the CIFAR ResNets (tqref.deploy), not the small demo net
            if run.settings.get("ternary") and run.settings["model"].startswith("resnet") \
                    and not packed.is_file():
                from tqref.deploy import export_packed
                model, ckpt = tio.load_model(last)
                n = export_packed(model, packed, metadata={"checkpoint": last.name, "epoch": ckpt.epoch,
                                                           "config": ckpt.config})
                log(f"{run.name}: wrote {packed.name} ({n:,} bytes)")
                written.append(packed)
            for path in (last, best):
                if path.is_file() and not tio.load_checkpoint(path).weights_only:
                    _, before, after = tio.save_weights_only(path, path)
                    log(f"{run.name}: {path.name} weights only ({before:,} -> {after:,} bytes)")
                    written.append(path)
        elif state == "started" and last.is_file():
            if not tio.load_checkpoint(last).weights_only:
                _, side, before, after = tio.split_checkpoint(last, last)
                log(f"{run.name}: {last.name} split: weights only + {Path(side).name} ({after:,} bytes in all)")
                written += [last, Path(side)]
            if best.is_file() and not tio.load_checkpoint(best).weights_only:
                tio.save_weights_only(best, best)
                written.append(best)
        for f in run.folder.glob("*"):  # nothing in a folder that does not exist
            if f.is_file() and f.stat().st_size > 5 * 2**20:
                log(f"{run.name}: warning: {f.name} is {f.stat().st_size / 2**20:.1f} MB")
    return written


def main_sweep(args):
    """The ``sweep`` command (see tqref.cli)."""
    specs = [load_spec(path, out=args.out) for path in args.specs]
    spec = specs[0] if len(specs) == 1 else merge_specs(specs)
    if args.publish:
        log = lambda line: print(line, flush=True)  # noqa: E731
        print(format_states(spec))
        written = publish(spec, log=log)
        print(f"published: {len(written)} file(s) rewritten or written" if written else
              "published: every run folder was ready already")
        return 0
    try:
        results = run_sweep(spec, scheduler=args.scheduler, workers=args.workers, threads=args.threads,
                            data_dir=args.data_dir, dry_run=args.dry_run, log=lambda line: print(line, flush=True))
    except KeyboardInterrupt:
        print("\ninterrupted: every run keeps its last finished epoch; the same command resumes them",
              file=sys.stderr)
        return 130
    failed = [r for r in results if r.get("state") == "failed"]
    if failed:
        print(f"error: {len(failed)} run(s) failed: " + ", ".join(Path(r['run']).name for r in failed),
              file=sys.stderr)
        return 1
    return 0
