"""The packed engine of several tqref checkouts (or settings), each in its own process.

    git worktree add ../tqref-stacked 0e1e628           # the stacked-batch experiment
    python benchmarks/engine_variants.py \\
        per-image=. \\
        stacked-256-8=../tqref-stacked:CHUNK=256,CHANNEL_BLOCK=8 \\
        stacked-1024-64=../tqref-stacked:CHUNK=1024,CHANNEL_BLOCK=64 \\
        --out benchmarks/results/engine_variants.json

Each contender is ``NAME=CHECKOUT[:ATTR=VALUE,...]``: the worker puts CHECKOUT
first on ``sys.path`` (so it imports that checkout's ``tqref``), sets each
ATTR of ``tqref.kernels.ternary_engine`` to the integer VALUE (module
settings such as ``CHUNK``), loads the trained packed model of ``--run`` and
times ``PackedModel.forward`` on a fixed batch of normal random numbers.
The contenders run on ``benchmarks/harness.py``: a fresh process per run,
rounds rotating, ``--threads`` threads each, the machine's load recorded.
Every contender's logits on a check batch are compared with the first
contender's (they compute the same network).  Run it on an idle machine.
"""

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
import harness  # noqa: E402

TOLERANCE = 1e-4


def parse_settings(text, who):
    """"ATTR=VALUE,..." -> {attr: int}; ``who`` names the contender in the error."""
    values = {}
    for item in filter(None, text.split(",")):
        key, sep, value = item.partition("=")
        if not sep or not key.isidentifier() or not value.lstrip("-").isdigit():
            raise SystemExit(f"engine_variants.py: {who}: expected ATTR=INTEGER settings, got {item!r}")
        values[key] = int(value)
    return values


def parse_contender(text):
    """"NAME=CHECKOUT[:ATTR=VALUE,...]" -> (name, checkout, {attr: int})."""
    name, sep, rest = text.partition("=")
    if not sep or not name or not rest:
        raise SystemExit(f"engine_variants.py: contender: expected NAME=CHECKOUT[:ATTR=VALUE,...], got {text!r}")
    checkout, _, settings = rest.partition(":")
    values = parse_settings(settings, f"contender {name}")
    if not (Path(checkout) / "tqref" / "kernels" / "ternary_engine.py").is_file():
        raise SystemExit(f"engine_variants.py: contender {name}: expected a tqref checkout, found no "
                         f"tqref/kernels/ternary_engine.py in {checkout}")
    return name, str(Path(checkout).resolve()), values


def worker(args):
    sys.path.insert(0, args.checkout)
    import compare_torch
    import numpy as np

    limiter = compare_torch.set_threads(args.threads, {"tqref"})  # noqa: F841 (imports the checkout's tqref first)
    import tqref
    from tqref.deploy import load_packed
    from tqref.kernels import ternary_engine

    settings = parse_settings(args.set or "", "--set")
    for key, value in settings.items():
        if not hasattr(ternary_engine, key):
            raise SystemExit(f"engine_variants.py: {args.checkout}'s ternary_engine has no setting {key}")
        setattr(ternary_engine, key, value)
    packed = load_packed(args.packed)
    check = packed.forward(np.random.default_rng(12345).standard_normal((8, 3, 32, 32)).astype(np.float32))
    x = np.random.default_rng(0).standard_normal((args.batch, 3, 32, 32)).astype(np.float32)
    times = harness.time_calls(lambda: packed.forward(x), args.repeats, args.warmup)
    harness.emit({"times_s": times, "items": args.batch, "check": check.tolist(),
                  "info": {"tqref": str(Path(tqref.__file__).parent), "settings": settings}})


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("contenders", nargs="*", metavar="NAME=CHECKOUT[:ATTR=VALUE,...]")
    parser.add_argument("--run", default="results/resnet20-ternary",
                        help="finished ternary run folder with final.packed.npz (default: %(default)s)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 256])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats-small", type=int, default=50, help="timed calls per run at batch <= 8")
    parser.add_argument("--repeats-large", type=int, default=7, help="timed calls per run at larger batches")
    parser.add_argument("--out", default="benchmarks/results/engine_variants.json")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--checkout", help=argparse.SUPPRESS)
    parser.add_argument("--set", default="", help=argparse.SUPPRESS)
    parser.add_argument("--packed", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)
    if len(args.contenders) < 1:
        raise SystemExit("engine_variants.py: expected at least one NAME=CHECKOUT contender")
    contenders = [parse_contender(text) for text in args.contenders]
    if len({name for name, _, _ in contenders}) != len(contenders):
        raise SystemExit("engine_variants.py: contender names must be unique")
    packed = Path(args.run) / "final.packed.npz"
    if not packed.is_file():
        raise SystemExit(f"engine_variants.py: --run: expected a run folder with final.packed.npz, found no {packed}")
    env = harness.thread_env(args.threads)
    groups = {}
    for batch in args.batch_sizes:
        small = batch <= 8
        common = ["--batch", str(batch), "--threads", str(args.threads), "--packed", str(packed.resolve()),
                  "--repeats", str(args.repeats_small if small else args.repeats_large),
                  "--warmup", "5" if small else "2"]
        groups[f"batch {batch}"] = [
            harness.Contender(name, [sys.executable, str(Path(__file__).resolve()), "--worker", "--checkout",
                                     checkout, "--set", ",".join(f"{k}={v}" for k, v in values.items())] + common,
                              env)
            for name, checkout, values in contenders]
    meta = {"what": "PackedModel.forward of a trained ternary CIFAR ResNet, seconds per call",
            "run": args.run, "contenders": {name: {"checkout": checkout, "settings": values,
                                                   "git": harness.git_state(checkout)}
                                            for name, checkout, values in contenders},
            "threads": args.threads, "input": "normal random numbers, float32, seed 0"}
    report = harness.run(groups, args.rounds, out=args.out, command=harness.command_line(), meta=meta, cwd=REPO,
                         progress=lambda line: print(line, flush=True))
    first = contenders[0][0]
    report["agreement"] = {g: {name: harness.relative_difference(check, checks[first])
                               for name, check in checks.items()} for g, checks in report["checks"].items()}
    report["agree"] = all(v <= TOLERANCE for by_name in report["agreement"].values() for v in by_name.values())
    report["speed_vs_first_best"] = {g: {name: s[first]["best_s"] / s[name]["best_s"] for name in s}
                                     for g, s in report["summary"].items()}
    report["speed_vs_first_median"] = {g: {name: s[first]["median_s"] / s[name]["median_s"] for name in s}
                                       for g, s in report["summary"].items()}
    harness.write_json(args.out, report)
    for group, by_name in report["summary"].items():
        for name, s in by_name.items():
            print(f"{group:>10} {name:>20}: best {1e3 * s['best_s']:8.2f} ms  median {1e3 * s['median_s']:8.2f} ms  "
                  f"speed vs {first} {report['speed_vs_first_best'][group][name]:.2f}x (best) "
                  f"{report['speed_vs_first_median'][group][name]:.2f}x (median)")
    print(f"logits agree with {first} (≤ {TOLERANCE:g}): {report['agree']}; wrote {args.out}")
    return 0 if report["agree"] else 1


if __name__ == "__main__":
    sys.exit(main())
