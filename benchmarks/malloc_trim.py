"""What Dask's default worker environment costs a tqref training step.

    python benchmarks/malloc_trim.py          # -> benchmarks/results/malloc_trim.json (~3 min idle)

A Dask nanny starts its workers with ``MALLOC_TRIM_THRESHOLD_=65536`` (its
config ``distributed.nanny.pre-spawn-environ``).  Setting any of glibc's
malloc thresholds by hand switches off glibc's *dynamic* mmap threshold, so
every array of 128 kB or more is then mapped fresh from the kernel and
returned to it when freed: each activation of each training step pays page
faults again.  ``tqref.sweep`` starts its LocalCluster without the variable;
this benchmark measures what it would cost: ResNet-20 (ternary) training
steps, batch 128, one thread (as a sweep worker runs), in fresh processes
with and without the variable, rounds alternating (``harness.py``).
"""

import argparse
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent))
import harness  # noqa: E402

ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}


def worker(steps, batch):
    from train_step import training_step

    step = training_step("resnet20", batch, ternary=True).step
    times = harness.time_calls(step, repeats=steps, warmup=3)
    harness.emit({"times_s": times, "items": batch,
                  "info": {"MALLOC_TRIM_THRESHOLD_": os.environ.get("MALLOC_TRIM_THRESHOLD_"),
                           "peak_rss_mb": harness.peak_rss_mb()}})


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per run")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--out", default=str(HERE / "results" / "malloc_trim.json"))
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args.steps, args.batch)
    argv_worker = [sys.executable, str(Path(__file__).resolve()), "--worker", "--steps", str(args.steps),
                   "--batch", str(args.batch)]
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_TRIM_THRESHOLD_"}
    contenders = {"ResNet-20 ternary training step, 1 thread": [
        harness.Contender("glibc default", argv_worker, env=ONE_THREAD),
        harness.Contender("MALLOC_TRIM_THRESHOLD_=65536 (Dask nanny default)", argv_worker,
                          env={**ONE_THREAD, "MALLOC_TRIM_THRESHOLD_": "65536"})]}
    os.environ.clear()
    os.environ.update(env)  # the parent's own setting must not leak into the "default" contender
    report = harness.run(contenders, rounds=args.rounds, out=args.out, command=harness.command_line(),
                         meta={"steps": args.steps, "batch": args.batch, "threads": 1}, progress=print)
    for group, summary in report["summary"].items():
        print(group)
        for name, s in summary.items():
            print(f"  {name:52s} best {s['best_s'] * 1000:7.1f} ms  median {s['median_s'] * 1000:7.1f} ms "
                  f"per step ({s['median_items_per_s']:.0f} images/s median)")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
