"""A small harness for fair timings: every measurement in its own fresh process.

Two frameworks timed in one process disturb each other (their thread pools
and OpenMP runtimes compete for the cores, and whichever loads second pays
for the first), so this harness never times two contenders in one process.
A *contender* is a command line that starts a worker process, which loads
its model, warms up, times a number of calls and prints one result line.
The harness runs the contenders in *rounds*: in every round each contender
runs once, in a fresh process; the order rotates from round to round
(round 0: A B C, round 1: B C A, round 2: C A B, ...) so that no contender
always runs first, or always right after the same neighbour.  A slow
minute on a shared machine then touches every contender about alike, and
the per-round times show it.

Contenders are grouped (for example one group per batch size): within a
group the contenders are compared; a round visits every group in turn.

Around every worker process the harness records the machine's load:
``os.getloadavg()``, the runnable/total thread counts of ``/proc/loadavg``,
the CPU count and the CPUs this process may use, before and after; and,
from ``/proc/stat`` and the worker's own CPU time, how many cores *other*
processes kept busy while the worker ran (``other_cores_busy``).  A result
measured while ``other_cores_busy`` was well above 0 measured a busy
machine, whatever its numbers say.

Worker side (in the script that defines the contenders)::

    times = harness.time_calls(fn, repeats=50, warmup=5)   # seconds per call
    harness.emit({"times_s": times, "items": batch, "info": {...}, "check": [...]})

``times_s`` is required; ``items`` (images per call) turns times into
items/s; ``info`` (versions, threads, memory) is kept per run; ``check``
(e.g. a few logits as nested lists) is kept once per contender, for the
script to compare outputs across contenders.

Parent side::

    contenders = {"batch 1": [harness.Contender("tqref", [sys.executable, "bench.py", "--worker", ...]),
                              harness.Contender("torch", [...])]}
    report = harness.run(contenders, rounds=7, out="benchmarks/results/x.json", command=harness.command_line())

The report (a dict, also written to ``out`` atomically after every run, with
``"complete": false`` until the last) holds every run and, per contender,
``best_s`` (the fastest single call of all rounds), ``median_s`` (the
median over the rounds of each round's median call), the round medians, and
items/s for both.  ``write_json`` writes to a temporary file in the same
folder and renames it over the target, so a reader never sees half a file.

The harness imports nothing but the standard library: it starts no thread
pool of its own in the parent process.
"""

import json
import math
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

RESULT_MARKER = "@@harness-result@@ "
SCHEMA = "tqref-benchmark-1"


class HarnessError(RuntimeError):
    """A worker that failed, timed out or printed no result."""


@dataclass
class Contender:
    """One side of a comparison: a name and the command that runs its worker.

    env: variables added to the worker's environment (e.g. thread counts)."""

    name: str
    argv: list
    env: dict = field(default_factory=dict)


# ------------------------------------------------------------------ worker side
def time_calls(fn, repeats, warmup=1, clock=time.perf_counter):
    """Call ``fn()`` ``warmup`` times untimed, then ``repeats`` times, and
    return the wall time of each timed call in seconds (a list)."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f"time_calls: expected repeats >= 1 and warmup >= 0, got {repeats}, {warmup}")
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = clock()
        fn()
        times.append(clock() - start)
    return times


def emit(result, stream=None):
    """Print a worker's result as the one line the harness reads."""
    if "times_s" not in result or not result["times_s"]:
        raise ValueError("emit: the result needs a non-empty 'times_s' list")
    stream = stream or sys.stdout
    stream.write(RESULT_MARKER + json.dumps(result) + "\n")
    stream.flush()


def peak_rss_mb():
    """This process's peak resident memory in MB (Linux reports kB)."""
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(kb / (1024 if sys.platform != "darwin" else 1024 * 1024), 1)


# ------------------------------------------------------------------ machine state
def _proc_loadavg():
    try:
        fields = Path("/proc/loadavg").read_text().split()
        running, total = fields[3].split("/")
        return int(running), int(total)
    except (OSError, IndexError, ValueError):
        return None, None


def _cpu_busy_seconds():
    """CPU-seconds all processes have used since boot (``/proc/stat``), or None."""
    try:
        first = Path("/proc/stat").read_text().splitlines()[0].split()
        ticks = [int(v) for v in first[1:]]
    except (OSError, IndexError, ValueError):
        return None
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _children_cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# The variables that size every thread pool a worker may start (OpenMP, OpenBLAS, MKL, Numba).
THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


def thread_env(n):
    """The environment that gives a worker process n threads in every pool."""
    return {k: str(n) for k in THREAD_ENV}


def usable_cpus():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count()


def machine_state():
    """A snapshot of the machine's load: load averages (1, 5, 15 min),
    runnable and total threads (``/proc/loadavg``), CPU count and usable CPUs."""
    running, total = _proc_loadavg()
    return {"time": round(time.time(), 3), "loadavg": [round(v, 2) for v in os.getloadavg()],
            "runnable_threads": running, "total_threads": total,
            "cpu_count": os.cpu_count(), "usable_cpus": usable_cpus()}


def machine_info():
    """What the machine and interpreter are (once per report)."""
    model = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"platform": platform.platform(), "machine": platform.machine(), "cpu_model": model,
            "cpu_count": os.cpu_count(), "usable_cpus": usable_cpus(), "python": platform.python_version()}


def git_state(folder):
    """(commit, whether the working tree has uncommitted changes) or (None, None)."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=folder,
                                    capture_output=True, text=True, check=True).stdout.strip())
        return commit, dirty
    except (OSError, subprocess.CalledProcessError):
        return None, None


def command_line(argv=None, program=None):
    """The command that ran this script, as one shell line (``python <script> <args>``)."""
    argv = list(sys.argv if argv is None else argv)
    program = program or argv[0]
    return shlex.join(["python", str(program)] + argv[1:])


# ------------------------------------------------------------------ parent side
def round_order(contenders, round_index):
    """The contenders in the order round ``round_index`` runs them: rotated by one per round."""
    n = len(contenders)
    if n == 0:
        return []
    k = round_index % n
    return list(contenders[k:]) + list(contenders[:k])


def _parse_result(stdout, who):
    lines = [line for line in stdout.splitlines() if line.startswith(RESULT_MARKER)]
    if not lines:
        raise HarnessError(f"{who}: the worker printed no result line ({RESULT_MARKER.strip()} ...)")
    result = json.loads(lines[-1][len(RESULT_MARKER):])
    times = result.get("times_s")
    if not isinstance(times, list) or not times or not all(isinstance(t, (int, float)) for t in times):
        raise HarnessError(f"{who}: the result has no list of times 'times_s'")
    return result


def run_worker(contender, cwd=None, timeout=None):
    """Run one contender's worker in a fresh process; returns (result, run record)."""
    env = dict(os.environ)
    env.update({k: str(v) for k, v in contender.env.items()})
    before = machine_state()
    busy0, child0, wall0 = _cpu_busy_seconds(), _children_cpu_seconds(), time.perf_counter()
    try:
        proc = subprocess.run(contender.argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as err:
        raise HarnessError(f"{contender.name}: the worker did not finish within {timeout} s") from err
    wall = time.perf_counter() - wall0
    busy1, child1 = _cpu_busy_seconds(), _children_cpu_seconds()
    after = machine_state()
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        raise HarnessError(f"{contender.name}: the worker exited with status {proc.returncode}:\n{tail}")
    result = _parse_result(proc.stdout, contender.name)
    worker_cpu = child1 - child0
    other = None if busy0 is None or busy1 is None else max(0.0, (busy1 - busy0 - worker_cpu) / wall)
    record = {"wall_s": round(wall, 4), "worker_cpu_s": round(worker_cpu, 4),
              "other_cores_busy": None if other is None else round(other, 3),
              "before": before, "after": after}
    return result, record


def summarize(times_by_round, items=None):
    """best, median and per-round medians of one contender's rounds (lists of seconds per call)."""
    all_times = [t for times in times_by_round for t in times]
    round_medians = [statistics.median(times) for times in times_by_round]
    out = {"rounds": len(times_by_round), "calls": len(all_times), "best_s": min(all_times),
           "median_s": statistics.median(round_medians), "round_medians_s": round_medians,
           "round_best_s": [min(times) for times in times_by_round]}
    if items:
        out["items_per_call"] = items
        out["best_items_per_s"] = items / out["best_s"]
        out["median_items_per_s"] = items / out["median_s"]
    return out


def load_summary(runs, busy_threshold=0.25):
    """The load over all runs; ``idle`` is True when no other process kept more
    than ``busy_threshold`` of a core busy during any run (None off Linux)."""
    if not runs:
        return {}
    other = [r["other_cores_busy"] for r in runs if r.get("other_cores_busy") is not None]
    load1 = [r[side]["loadavg"][0] for r in runs for side in ("before", "after")]
    return {"loadavg_1min_min": min(load1), "loadavg_1min_max": max(load1),
            "other_cores_busy_median": statistics.median(other) if other else None,
            "other_cores_busy_max": max(other) if other else None,
            "busy_threshold": busy_threshold,
            "idle": (max(other) <= busy_threshold) if other else None}


def write_json(path, data):
    """Write ``data`` as JSON to ``path`` atomically: a temporary file in the
    same folder, flushed to disk, then renamed over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, allow_nan=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def _now():
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def run(groups, rounds, out=None, command=None, meta=None, skipped=None, cwd=None, timeout=None,
        progress=None):
    """Run every contender of every group ``rounds`` times, each time in a fresh process.

    groups:   dict group name -> list of Contender (names unique within a group)
    rounds:   how many times each contender runs
    out:      JSON file written (atomically) after every run, and at the end
    command:  the command line to record (``command_line()``)
    meta:     dict stored as is under "meta" (what is measured, settings, model)
    skipped:  dict contender name -> why it is not measured (stored as is)
    progress: callable(str) for one line per run (e.g. print), or None
    Returns the report dict (see the module docstring)."""
    if rounds < 1:
        raise ValueError(f"run: rounds: expected >= 1, got {rounds}")
    for group, contenders in groups.items():
        names = [c.name for c in contenders]
        if len(set(names)) != len(names):
            raise ValueError(f"run: group {group!r}: contender names must be unique, got {names}")
    report = {"schema": SCHEMA, "command": command, "started": _now(), "finished": None, "complete": False,
              "machine": machine_info(), "meta": meta or {}, "skipped": dict(skipped or {}),
              "rounds": rounds, "groups": {g: [c.name for c in cs] for g, cs in groups.items()},
              "runs": [], "checks": {g: {} for g in groups}, "summary": {}, "load": {}}
    times = {g: {c.name: [] for c in cs} for g, cs in groups.items()}
    items = {g: {} for g in groups}
    total = rounds * sum(len(cs) for cs in groups.values())
    for r in range(rounds):
        for group, contenders in groups.items():
            for position, contender in enumerate(round_order(contenders, r)):
                result, record = run_worker(contender, cwd=cwd, timeout=timeout)
                times[group][contender.name].append([float(t) for t in result["times_s"]])
                if result.get("items"):
                    items[group][contender.name] = result["items"]
                if "check" in result and contender.name not in report["checks"][group]:
                    report["checks"][group][contender.name] = result["check"]
                report["runs"].append({"round": r, "group": group, "position": position,
                                       "contender": contender.name, **record,
                                       "times_s": result["times_s"], "info": result.get("info", {})})
                if progress:
                    t = result["times_s"]
                    progress(f"[{len(report['runs'])}/{total}] round {r + 1} {group} {contender.name}: "
                             f"median {1e3 * statistics.median(t):.2f} ms, best {1e3 * min(t):.2f} ms "
                             f"(load {record['before']['loadavg'][0]:.2f}, other cores busy "
                             f"{record['other_cores_busy']})")
                if out:
                    _refresh(report, times, items)
                    write_json(out, report)
    _refresh(report, times, items)
    report["finished"], report["complete"] = _now(), True
    if out:
        write_json(out, report)
    return report


def _refresh(report, times, items):
    report["summary"] = {g: {name: summarize(t, items[g].get(name)) for name, t in by_name.items() if t}
                         for g, by_name in times.items()}
    report["load"] = load_summary(report["runs"])


def relative_difference(a, b):
    """max |a − b| / max |b| of two nested lists of numbers (b the reference)."""
    flat_a, flat_b = _flatten(a), _flatten(b)
    if len(flat_a) != len(flat_b):
        raise ValueError(f"relative_difference: {len(flat_a)} values against {len(flat_b)}")
    scale = max(abs(v) for v in flat_b) or 1.0
    return max(abs(x - y) for x, y in zip(flat_a, flat_b)) / scale


def _flatten(value):
    if isinstance(value, (list, tuple)):
        return [v for item in value for v in _flatten(item)]
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("relative_difference: not a finite number")
    return [float(value)]
