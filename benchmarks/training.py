"""Training speed of tqref and PyTorch, each framework in its own process.

    python benchmarks/training.py                        # -> benchmarks/results/training.json
    python benchmarks/training.py --models resnet20 resnet56 --variants fp ternary --rounds 5
    python benchmarks/training.py --contenders tqref tqref-reference --out benchmarks/results/backends.json
    python benchmarks/training.py --contenders tqref tqref-baseline --baseline ../tqref-old \
        --out benchmarks/results/fast_before_after.json      # another checkout's tqref, same rounds

One training step (forward, softmax cross-entropy, backward, SGD with Nesterov
momentum 0.9 and weight decay 3e-4) at batch 128, on random inputs, with the
models and step functions of ``compare_torch.py`` (the PyTorch CIFAR ResNet
with option-A shortcuts; for ``ternary`` both sides recompute Δ, α and the
codes from the latent weights at every step and pass the gradient straight
through, Eqs. (1)-(4)).  Contenders per configuration: ``tqref`` (the fast
backend), ``tqref-reference`` (the reference backend, ``TQREF_BACKEND=reference``),
``tqref-baseline`` (the tqref of the checkout given by ``--baseline``, to
compare two versions in one run), ``pytorch-nchw`` and
``pytorch-channels-last``; every run is a fresh
process with ``--threads`` threads (2 by default), the order rotating from
round to round, the machine's load recorded around each run
(``benchmarks/harness.py``).  PyTorch is optional (``pip install
torch==2.13.0``); without it only tqref runs.  The report holds, per
configuration, each contender's best and median time per step, images/s
and ``peak_rss_mb``, and the ratio tqref / PyTorch's faster layout.
Run it on an idle machine: the report's ``load.idle`` says whether it was.
"""

import argparse
import importlib.util
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
# the tqref under test: this checkout, or the one a tqref-baseline worker was given
sys.path.insert(1, os.environ.get("TQREF_BENCH_ROOT") or str(HERE.parent))
import compare_torch  # noqa: E402
import harness  # noqa: E402

CONTENDERS = ("tqref", "tqref-reference", "tqref-baseline", "pytorch-nchw", "pytorch-channels-last")
DEFAULT_CONTENDERS = ("tqref", "pytorch-nchw", "pytorch-channels-last")


def worker(contender, depth, variant, batch, threads, repeats, warmup):
    framework = "torch" if contender.startswith("pytorch") else "tqref"
    limiter = compare_torch.set_threads(threads, {framework})  # noqa: F841 (kept alive while timing)
    if framework == "tqref":
        step = compare_torch.tqref_step_fn(depth, variant, "train", batch)
    else:
        step = compare_torch.torch_step_fn(depth, variant, "train", batch,
                                           channels_last=contender == "pytorch-channels-last")
    times = harness.time_calls(step, repeats=repeats, warmup=warmup)
    harness.emit({"times_s": times, "items": batch, "info": {"peak_rss_mb": harness.peak_rss_mb(),
                                                             "threads": threads}})


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["resnet20"], choices=compare_torch.MODELS)
    parser.add_argument("--variants", nargs="+", default=["fp", "ternary"], choices=compare_torch.VARIANTS)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=8, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per run")
    parser.add_argument("--out", default=str(HERE / "results" / "training.json"))
    parser.add_argument("--contenders", nargs="+", default=list(DEFAULT_CONTENDERS), choices=CONTENDERS)
    parser.add_argument("--baseline", metavar="DIR", default=None,
                        help="a checkout of another tqref version: the contender tqref-baseline imports it")
    parser.add_argument("--worker", choices=CONTENDERS, help=argparse.SUPPRESS)
    parser.add_argument("--depth", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args.worker, args.depth, args.variant, args.batch, args.threads, args.repeats, args.warmup)

    has_torch = importlib.util.find_spec("torch") is not None
    names = [n for n in args.contenders if has_torch or not n.startswith("pytorch")]
    if "tqref-baseline" in names and not (args.baseline and (Path(args.baseline) / "tqref").is_dir()):
        parser.error(f"--baseline: expected a folder holding a tqref/ package for tqref-baseline, "
                     f"got {args.baseline!r}")
    env = harness.thread_env(args.threads)
    # each contender's process: its own backend, or the baseline checkout first on the path
    extra_env = {"tqref": {"TQREF_BACKEND": "fast"}, "tqref-reference": {"TQREF_BACKEND": "reference"},
                 "tqref-baseline": {"TQREF_BACKEND": "fast",
                                    "TQREF_BENCH_ROOT": str(Path(args.baseline or ".").resolve())}}
    groups = {}
    for model in args.models:
        depth = int(model[len("resnet"):])
        for variant in args.variants:
            groups[f"{model} {variant} train, batch {args.batch}"] = [
                harness.Contender(name, [sys.executable, str(Path(__file__).resolve()), "--worker", name,
                                         "--depth", str(depth), "--variant", variant, "--batch", str(args.batch),
                                         "--threads", str(args.threads), "--repeats", str(args.repeats),
                                         "--warmup", str(args.warmup)],
                                  env={**env, **extra_env.get(name, {})})
                for name in names]
    os.environ.pop("MALLOC_TRIM_THRESHOLD_", None)
    report = harness.run(groups, rounds=args.rounds, out=args.out, command=harness.command_line(),
                         meta={"batch": args.batch, "threads": args.threads, "repeats": args.repeats},
                         skipped={} if has_torch else {"pytorch": "torch is not installed"}, progress=print)
    ratios = {}
    for group, summary in report["summary"].items():
        print(group)
        for name, s in summary.items():
            print(f"  {name:24s} best {s['best_items_per_s']:6.0f} img/s  median {s['median_items_per_s']:6.0f} img/s")
        for other in ("tqref-reference", "tqref-baseline"):
            if other in summary and "tqref" in summary:
                r = summary["tqref"]["median_items_per_s"] / summary[other]["median_items_per_s"]
                ratios[f"{group}: tqref / {other}"] = r
                print(f"  tqref / {other} (medians): {r:.2f}x")
        torch_best = [s for n, s in summary.items() if n.startswith("pytorch")]
        if torch_best and "tqref" in summary:
            fastest = max(torch_best, key=lambda s: s["median_items_per_s"])
            ratios[group] = summary["tqref"]["median_items_per_s"] / fastest["median_items_per_s"]
            print(f"  tqref / PyTorch's faster layout (medians): {ratios[group]:.2f}x")
    report["ratios_tqref_over_best_pytorch_median"] = {k: v for k, v in ratios.items() if ":" not in k}
    report["ratios_tqref_over_other_tqref_median"] = {k: v for k, v in ratios.items() if ":" in k}
    harness.write_json(args.out, report)
    print(f"wrote {args.out} (machine idle: {report['load'].get('idle')})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
