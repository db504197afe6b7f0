"""Inference speed of a trained ternary ResNet-20, each framework in its own process.

    python benchmarks/inference.py                       # -> benchmarks/results/inference.json (~5 min idle)
    python benchmarks/inference.py --run results/resnet20-tex2          # the t_ex = 2 model
    python benchmarks/inference.py --rounds 2 --repeats-small 5 --repeats-large 2 --out /tmp/quick.json

Contenders, all computing the same function (the trained ternary network of
``--run``, whose ``last.npz`` holds the weights and ``final.packed.npz`` the
deployable file written from it by ``python -m tqref export ... --format packed``):

    tqref-packed         ``tqref.deploy.load_packed(final.packed.npz).forward``: batch norm
                         folded, 2-bit codes unpacked into index lists, the add-only Numba
                         kernels of ``tqref.kernels.ternary_engine`` (zero weights skipped)
    tqref-dense          the ternary model simulated in float: tqref's float ResNet holding the
                         effective weights W_eff = Σ α_k T_k (computed once, as a dense deployment
                         would), evaluation mode under ``tqref.nn.no_grad()``, tqref's fast path
                         (channels-last im2col/Winograd + BLAS)
    pytorch-nchw         PyTorch CPU float32, the same CIFAR ResNet (option-A shortcuts, defined
                         here) loading the file ``python -m tqref export last.npz ... --format
                         torch`` writes (W_eff and the batch-norm statistics), eval mode under
                         ``torch.inference_mode()``, PyTorch's default NCHW layout
    pytorch-channels-last  the same with the model and each input batch in
                         ``torch.channels_last`` (the conversion of the NCHW input is timed)

PyTorch is optional (``pip install torch==2.13.0``); without it the two
PyTorch contenders are skipped, and the JSON says why.

How it measures (``benchmarks/harness.py``): every contender runs in a fresh
process of its own, once per round, in a rotating order; each run loads the
model, checks its output on a fixed batch, warms up, and times single
forward passes (``--repeats-small`` of them at batch ≤ 8, ``--repeats-large``
at larger batches).  Every process gets ``--threads`` threads (environment
``OMP_NUM_THREADS``, ``OPENBLAS_NUM_THREADS``, ``MKL_NUM_THREADS``,
``NUMBA_NUM_THREADS``, plus ``numba.set_num_threads`` / ``torch.set_num_threads``);
public APIs only.  The input is a fixed batch of normal random numbers (the
speed of none of the contenders depends on the pixel values).

Output: a JSON report (``--out``) with the exact command, the machine, every
run with the load around it, per contender the best and median time per
call and images/s, the agreement of every contender's logits with
tqref-dense, and the ratios, with PyTorch's faster layout (by best time, per
batch size) as the headline and NCHW beside it.  Run it on an idle machine:
the report's ``load`` section says whether it was (``idle``).
"""

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(REPO))  # the workers time this repository's tqref, installed or not
import harness  # noqa: E402

DEFAULT_RUN = "results/resnet20-ternary"
CONTENDERS = ("tqref-packed", "tqref-dense", "pytorch-nchw", "pytorch-channels-last")
REFERENCE = "tqref-dense"
AGREEMENT_TOLERANCE = 1e-4  # max |logit − reference| / max |reference logit|
CHECK_SEED, CHECK_IMAGES, INPUT_SEED = 12345, 8, 0


# ------------------------------------------------------------------ the PyTorch model
def torch_cifar_resnet(depth, num_classes=10):
    """The CIFAR ResNet of He et al. (option-A shortcuts) in PyTorch, with the
    parameter names ``python -m tqref export --format torch`` writes."""
    import torch.nn as nn
    import torch.nn.functional as F

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.pad = (cout - cin) // 2 if (stride != 1 or cin != cout) else None

        def forward(self, x):
            out = F.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            # option A: every second pixel, the new channels zero-padded on both sides
            skip = x if self.pad is None else F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))
            return F.relu(out + skip)

    class ResNet(nn.Module):
        def __init__(self, n):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(16)
            stages, cin = [], 16
            for cout, stride in ((16, 1), (32, 2), (64, 2)):
                stages.append(nn.Sequential(Block(cin, cout, stride), *[Block(cout, cout, 1) for _ in range(n - 1)]))
                cin = cout
            self.layer1, self.layer2, self.layer3 = stages
            self.linear = nn.Linear(64, num_classes)

        def forward(self, x):
            out = F.relu(self.bn1(self.conv1(x)))
            out = self.layer3(self.layer2(self.layer1(out)))
            return self.linear(out.mean(dim=(2, 3)))

    return ResNet((depth - 2) // 6)


# ------------------------------------------------------------------ worker
def _inputs(batch):
    import numpy as np
    x = np.random.default_rng(INPUT_SEED).standard_normal((batch, 3, 32, 32)).astype(np.float32)
    check = np.random.default_rng(CHECK_SEED).standard_normal((CHECK_IMAGES, 3, 32, 32)).astype(np.float32)
    return x, check


def _tqref_worker(kind, args):
    import numba
    import numpy as np

    import tqref.kernels  # noqa: F401  (sets OMP_WAIT_POLICY=PASSIVE before any thread pool starts)

    numba.set_num_threads(args.threads)
    x, x_check = _inputs(args.batch)
    if kind == "tqref-packed":
        from tqref.deploy import load_packed
        model = load_packed(args.packed)

        def forward(images):
            return model.forward(images)
    else:
        from tqref.io import read_weights
        from tqref.models import get_model
        from tqref.nn import no_grad
        model = get_model(args.model_name)
        state, _ = read_weights(args.torch_weights)  # W_eff, as PyTorch gets them
        model.load_state_dict({k: v for k, v in state.items() if not k.endswith("num_batches_tracked")})
        model.eval()

        def forward(images):
            with no_grad():  # keep no caches for a backward pass, as torch.inference_mode() does
                return model.forward(images)
    check = np.asarray(forward(x_check), dtype=np.float64)
    times = harness.time_calls(lambda: forward(x), args.repeats, args.warmup)
    from threadpoolctl import threadpool_info
    info = {"numba": numba.__version__, "numpy": np.__version__, "numba_threads": numba.get_num_threads(),
            "blas": [{"api": p.get("internal_api"), "threads": p.get("num_threads")} for p in threadpool_info()
                     if p.get("user_api") == "blas"],
            "peak_rss_mb": harness.peak_rss_mb()}
    return times, check, info


def _torch_worker(kind, args):
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    x, x_check = _inputs(args.batch)
    net = torch_cifar_resnet(args.depth, args.num_classes)
    with np.load(args.torch_weights, allow_pickle=False) as z:
        net.load_state_dict({k: torch.from_numpy(z[k]) for k in z.files}, strict=True)
    net.eval()
    channels_last = kind == "pytorch-channels-last"
    if channels_last:
        net = net.to(memory_format=torch.channels_last)

    def forward(images):
        with torch.inference_mode():
            xt = torch.from_numpy(images)
            if channels_last:
                xt = xt.contiguous(memory_format=torch.channels_last)
            return net(xt).numpy()
    check = np.asarray(forward(x_check), dtype=np.float64)
    times = harness.time_calls(lambda: forward(x), args.repeats, args.warmup)
    info = {"torch": torch.__version__, "numpy": np.__version__, "torch_threads": torch.get_num_threads(),
            "peak_rss_mb": harness.peak_rss_mb()}
    return times, check, info


def worker(args):
    kind = args.worker
    times, check, info = (_tqref_worker if kind.startswith("tqref") else _torch_worker)(kind, args)
    info["env_threads"] = {k: os.environ.get(k) for k in harness.THREAD_ENV}
    if kind.startswith("tqref"):
        import tqref
        info["tqref"] = _relative(Path(tqref.__file__).parent)
    harness.emit({"times_s": times, "items": args.batch, "check": check.tolist(), "info": info})


# ------------------------------------------------------------------ parent


def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def describe_model(run_dir):
    """What is measured: the run's files, their hashes, epoch, accuracy and sparsity (from the packed codes)."""
    from tqref.deploy import read_packed
    run_dir = Path(run_dir)
    checkpoint, packed = run_dir / "last.npz", run_dir / "final.packed.npz"
    for path in (checkpoint, packed):
        if not path.is_file():
            raise SystemExit(f"inference.py: {path} not found (expected a finished run folder, see results/README.md)")
    config = json.loads((run_dir / "config.json").read_text())
    architecture, metadata, layers = read_packed(packed)
    codes = [layer.codes for layer in layers if layer.ternary]
    zeros, total = sum(int((c == 0).sum()) for c in codes), sum(c.size for c in codes)
    result = json.loads((run_dir / "result.json").read_text()) if (run_dir / "result.json").is_file() else {}
    return {"run": _relative(run_dir), "model": config["model"], "depth": int(architecture["depth"]),
            "num_classes": int(architecture["num_classes"]), "t_ex": config.get("t_ex"),
            "checkpoint": _relative(checkpoint), "checkpoint_sha256": sha256(checkpoint),
            "packed": _relative(packed), "packed_sha256": sha256(packed), "packed_bytes": packed.stat().st_size,
            "packed_metadata": {k: metadata.get(k) for k in ("checkpoint", "epoch")},
            "final_top1": result.get("final_top1"), "final_sparsity_logged": result.get("final_sparsity"),
            "sparsity": zeros / total}


def _relative(path):
    try:
        return str(Path(path).resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def export_torch_weights(checkpoint, folder):
    """``python -m tqref export CKPT OUT --format torch`` (the public CLI); returns (path, command)."""
    out = Path(folder) / "torch_weights.npz"
    argv = [sys.executable, "-m", "tqref", "export", str(checkpoint), str(out), "--format", "torch"]
    subprocess.run(argv, cwd=REPO, check=True, capture_output=True, text=True)
    return out, f"python -m tqref export {_relative(checkpoint)} <tmp>/torch_weights.npz --format torch"


def torch_available():
    import importlib.util
    return importlib.util.find_spec("torch") is not None


def ratios(summary, key="best_s"):
    """How many times faster (time of the other / time of this) per batch group, on ``key``."""
    out = {}
    for group, by_name in summary.items():
        t = {name: s[key] for name, s in by_name.items()}
        row = {}
        torch_names = [n for n in ("pytorch-channels-last", "pytorch-nchw") if n in t]
        if torch_names:
            row["pytorch_best_layout"] = min(torch_names, key=lambda n: t[n])
        for mine in ("tqref-packed", "tqref-dense"):
            if mine not in t:
                continue
            if mine == "tqref-packed" and "tqref-dense" in t:
                row["tqref-packed_vs_tqref-dense"] = t["tqref-dense"] / t[mine]
            if torch_names:
                row[f"{mine}_vs_pytorch-best-layout"] = t[row["pytorch_best_layout"]] / t[mine]
            if "pytorch-nchw" in t:
                row[f"{mine}_vs_pytorch-nchw"] = t["pytorch-nchw"] / t[mine]
        out[group] = row
    return out


def agreement(checks):
    """max relative logit difference of every contender against tqref-dense, per group."""
    return {group: {name: harness.relative_difference(values, by_name[REFERENCE])
                    for name, values in by_name.items()}
            for group, by_name in checks.items() if REFERENCE in by_name}


def format_table(report):
    lines = [f"{'batch':>6}  {'contender':22}  {'best ms':>9}  {'median ms':>9}  {'best img/s':>10}  "
             f"{'median img/s':>12}"]
    for group, by_name in report["summary"].items():
        for name, s in by_name.items():
            lines.append(f"{s['items_per_call']:>6}  {name:22}  {1e3 * s['best_s']:9.2f}  {1e3 * s['median_s']:9.2f}  "
                         f"{s['best_items_per_s']:10.0f}  {s['median_items_per_s']:12.0f}")
    for group, row in report["ratios_best"].items():
        parts = [f"{k} {v:.2f}x" for k, v in row.items() if isinstance(v, float)]
        lines.append(f"{group}: " + ", ".join(parts) + (f" (PyTorch's best layout: {row['pytorch_best_layout']})"
                                                         if "pytorch_best_layout" in row else ""))
    load = report["load"]
    lines.append(f"load: 1-min load average {load['loadavg_1min_min']:.2f}–{load['loadavg_1min_max']:.2f}, "
                 f"other processes kept {load['other_cores_busy_median']} cores busy (median; max "
                 f"{load['other_cores_busy_max']}): {'idle' if load['idle'] else 'BUSY, not a fair measurement'}")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default=DEFAULT_RUN, help="a finished ternary run folder with last.npz and "
                        "final.packed.npz (default %(default)s)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 256])
    parser.add_argument("--threads", type=int, default=2, help="threads of every contender (default 2)")
    parser.add_argument("--rounds", type=int, default=7, help="fresh-process runs of every contender (default 7)")
    parser.add_argument("--repeats-small", type=int, default=50, help="timed calls per run at batch <= 8")
    parser.add_argument("--repeats-large", type=int, default=5, help="timed calls per run at larger batches")
    parser.add_argument("--no-torch", action="store_true", help="measure the tqref contenders only")
    parser.add_argument("--out", default=None, help="JSON report (default benchmarks/results/inference.json, "
                        "or inference-RUNNAME.json for another --run)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds one worker process may take")
    # worker mode (started by the parent; not for direct use)
    parser.add_argument("--worker", choices=CONTENDERS, help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--packed", help=argparse.SUPPRESS)
    parser.add_argument("--torch-weights", help=argparse.SUPPRESS)
    parser.add_argument("--model-name", help=argparse.SUPPRESS)
    parser.add_argument("--depth", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--num-classes", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)

    # the command as typed from the repository root
    command = harness.command_line(["benchmarks/inference.py"] + list(sys.argv[1:] if argv is None else argv))
    run_dir = (REPO / args.run) if not Path(args.run).is_absolute() else Path(args.run)
    out = Path(args.out) if args.out else (
        REPO / "benchmarks" / "results" / ("inference.json" if run_dir.resolve() == (REPO / DEFAULT_RUN).resolve()
                                           else f"inference-{run_dir.name}.json"))
    model = describe_model(run_dir)
    skipped = {}
    names = list(CONTENDERS)
    if args.no_torch or not torch_available():
        why = ("--no-torch given" if args.no_torch else
               "torch is not installed (optional: pip install torch==2.13.0)")
        skipped = {"pytorch-nchw": why, "pytorch-channels-last": why}
        names = [n for n in names if n not in skipped]
    folder = Path(tempfile.mkdtemp(prefix="tqref-inference-"))
    try:
        weights, export_command = export_torch_weights(run_dir / "last.npz", folder)
        env = harness.thread_env(args.threads)
        groups = {}
        for batch in args.batch_sizes:
            small = batch <= 8
            common = ["--batch", str(batch), "--threads", str(args.threads),
                      "--repeats", str(args.repeats_small if small else args.repeats_large),
                      "--warmup", "5" if small else "2", "--packed", str(run_dir / "final.packed.npz"),
                      "--torch-weights", str(weights), "--model-name", model["model"],
                      "--depth", str(model["depth"]), "--num-classes", str(model["num_classes"])]
            groups[f"batch {batch}"] = [harness.Contender(name, [sys.executable, str(Path(__file__).resolve()),
                                                                 "--worker", name] + common, env)
                                        for name in names]
        meta = {"what": "forward pass (logits) of a trained ternary CIFAR ResNet, seconds per call",
                "model": model, "torch_export_command": export_command, "threads": args.threads,
                "thread_env": env, "batch_sizes": args.batch_sizes,
                "repeats": {"batch<=8": args.repeats_small, "larger": args.repeats_large},
                "warmup": {"batch<=8": 5, "larger": 2},
                "input": f"normal random numbers, float32, seed {INPUT_SEED}; check batch: {CHECK_IMAGES} images, "
                         f"seed {CHECK_SEED}",
                "reference": REFERENCE, "agreement_tolerance": AGREEMENT_TOLERANCE,
                "headline": "best_s (the fastest call over all rounds); PyTorch's best layout per batch size by "
                            "best_s, NCHW beside it; medians in ratios_median"}
        git_commit, git_dirty = harness.git_state(REPO)
        meta["git_commit"], meta["git_dirty"] = git_commit, git_dirty
        report = harness.run(groups, args.rounds, out=out, command=command, meta=meta, skipped=skipped,
                             cwd=REPO, timeout=args.timeout, progress=lambda line: print(line, flush=True))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    report["agreement"] = agreement(report["checks"])
    report["agree"] = all(v <= AGREEMENT_TOLERANCE for by_name in report["agreement"].values()
                          for v in by_name.values())
    report["ratios_best"] = ratios(report["summary"], "best_s")
    report["ratios_median"] = ratios(report["summary"], "median_s")
    harness.write_json(out, report)
    print(format_table(report))
    print(f"logits agree with {REFERENCE} (max relative difference ≤ {AGREEMENT_TOLERANCE:g}): {report['agree']}")
    print(f"wrote {out}")
    return 0 if report["agree"] else 1


if __name__ == "__main__":
    sys.exit(main())
