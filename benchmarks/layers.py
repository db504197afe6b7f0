"""Layer by layer: where tqref's training step gains or loses against PyTorch's.

    python benchmarks/layers.py                                    # -> benchmarks/results/layers.json
    python benchmarks/layers.py --rounds 5 --batch 128 --threads 2

The whole-step benchmark (``training.py``) says how fast a step is; this one
says which operation makes the difference.  It times, at batch 128 and on
2 threads, every distinct layer shape of a CIFAR ResNet-20's training step,
forward and backward together:

    conv  3>16 @32       the first convolution (its input gradient included:
                         both frameworks compute it here)
    conv  16>16 @32      3×3 stride 1 (×6 in ResNet-20), 32>32 @16 (×5), 64>64 @8 (×5)
    conv  16>32 @32 /2   the two 3×3 stride-2 convolutions (and 32>64 @16 /2)
    bn-relu @C×H         batch norm + ReLU in training mode (statistics of the batch)
    bn-add-relu @C×H     batch norm + residual add + ReLU (the end of a block)

Contenders: ``tqref`` (the fast backend's operations on channels-last
activations, as a ResNet keeps them), ``pytorch-channels-last`` and
``pytorch-nchw`` (``torch.nn.functional`` with autograd: one forward, one
``backward`` with a random upstream gradient).  Both frameworks start from
the same NumPy arrays, and a few values of each one's input and weight (or
γ) gradients are compared across contenders: they time the same
computation.  Each run is its own
process, the order rotating from round to round (``benchmarks/harness.py``).
The weights are not updated; the step's other parts (loss, shortcut,
pooling, SGD) are left out.  Multiply the per-shape times by the counts
above to see a whole step's share.  Run it on an idle machine.
"""

import argparse
import importlib.util
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent))
import compare_torch  # noqa: E402
import harness  # noqa: E402

TOLERANCE = 1e-4  # relative difference of the checked gradient values between frameworks
CONTENDERS = ("tqref", "pytorch-channels-last", "pytorch-nchw")
# name: (kind, C, F, H, stride, count in ResNet-20)
SHAPES = {
    "conv 3>16 @32": ("conv", 3, 16, 32, 1, 1),
    "conv 16>16 @32": ("conv", 16, 16, 32, 1, 6),
    "conv 16>32 @32 /2": ("conv", 16, 32, 32, 2, 1),
    "conv 32>32 @16": ("conv", 32, 32, 16, 1, 5),
    "conv 32>64 @16 /2": ("conv", 32, 64, 16, 2, 1),
    "conv 64>64 @8": ("conv", 64, 64, 8, 1, 5),
    "bn-relu @16x32": ("bn", 16, 16, 32, 1, 4),
    "bn-add-relu @16x32": ("bn-add", 16, 16, 32, 1, 3),
    "bn-relu @32x16": ("bn", 32, 32, 16, 1, 3),
    "bn-add-relu @32x16": ("bn-add", 32, 32, 16, 1, 3),
    "bn-relu @64x8": ("bn", 64, 64, 8, 1, 3),
    "bn-add-relu @64x8": ("bn-add", 64, 64, 8, 1, 3),
}


def inputs(kind, C, F, H, stride, batch):
    """The layer's arrays as NCHW float32 NumPy arrays (seed 0): both frameworks use these."""
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, C, H, H)).astype(np.float32)
    if kind == "conv":
        w = (0.1 * rng.standard_normal((F, C, 3, 3))).astype(np.float32)
        Ho = (H + 2 - 3) // stride + 1
        return {"x": x, "w": w, "dout": rng.standard_normal((batch, F, Ho, Ho)).astype(np.float32)}
    res = rng.standard_normal((batch, C, H, H)).astype(np.float32) if kind == "bn-add" else None
    return {"x": x, "res": res, "dout": rng.standard_normal((batch, C, H, H)).astype(np.float32),
            "gamma": (1 + 0.1 * rng.standard_normal(C)).astype(np.float32),
            "beta": (0.1 * rng.standard_normal(C)).astype(np.float32)}


def check_values(dx, dparam):
    """A few gradient values (NCHW order) to compare the frameworks' results."""
    import numpy as np
    return [np.asarray(dx)[:2, :2, :2, :4].ravel().tolist(), np.asarray(dparam).ravel()[:8].tolist()]


def tqref_fn(kind, C, F, H, stride, batch):
    """step() -> (dx, dw or dgamma), on the fast backend's operations."""
    import numpy as np

    from tqref.kernels import ops
    from tqref.kernels.layout import to_nchw, to_nhwc

    a = inputs(kind, C, F, H, stride, batch)

    def channels_last(v):  # NCHW shape, NHWC memory: how the fast backend keeps activations
        return None if v is None else to_nchw(to_nhwc(v))

    x, dout = channels_last(a["x"]), channels_last(a["dout"])
    if kind == "conv":
        w = a["w"]

        def step():
            out, cache = ops.conv2d_forward(x, w, None, stride, 1)
            dx, dw, _ = ops.conv2d_backward(dout, cache)
            return dx, dw
        return step
    res = channels_last(a["res"])
    mean, var = np.zeros(C, np.float32), np.ones(C, np.float32)

    def step():
        out, cache = ops.batchnorm_relu_forward(x, a["gamma"], a["beta"], mean, var, True, 0.1, 1e-5,
                                                residual=res)
        dx, dgamma, _, _ = ops.batchnorm_relu_backward(dout, cache)
        return dx, dgamma
    return step


def torch_fn(kind, C, F, H, stride, batch, channels_last):
    """step() -> (dx, dw or dgamma), with torch.nn.functional and autograd."""
    import torch
    import torch.nn.functional as tf

    a = inputs(kind, C, F, H, stride, batch)
    fmt = torch.channels_last if channels_last else torch.contiguous_format

    def tensor(v, grad=False):
        return None if v is None else torch.from_numpy(v).contiguous(memory_format=fmt).requires_grad_(grad)

    x, dout = tensor(a["x"], grad=True), tensor(a["dout"])
    if kind == "conv":
        w = tensor(a["w"], grad=True)

        def step():
            x.grad = w.grad = None
            tf.conv2d(x, w, None, stride, 1).backward(dout)
            return x.grad, w.grad
        return step
    gamma, beta = torch.from_numpy(a["gamma"]).requires_grad_(True), torch.from_numpy(a["beta"]).requires_grad_(True)
    mean, var = torch.zeros(C), torch.ones(C)
    res = tensor(a["res"])

    def step():
        x.grad = gamma.grad = beta.grad = None
        out = tf.batch_norm(x, mean, var, gamma, beta, training=True, momentum=0.1, eps=1e-5)
        if res is not None:
            out = out + res
        tf.relu(out).backward(dout)
        return x.grad, gamma.grad
    return step


def worker(contender, shape, batch, threads, repeats, warmup):
    kind, C, F, H, stride, _ = SHAPES[shape]
    framework = "tqref" if contender == "tqref" else "torch"
    limiter = compare_torch.set_threads(threads, {framework})  # noqa: F841 (kept alive while timing)
    if framework == "tqref":
        step = tqref_fn(kind, C, F, H, stride, batch)
        check = check_values(*step())
    else:
        step = torch_fn(kind, C, F, H, stride, batch, channels_last=contender == "pytorch-channels-last")
        check = check_values(*(t.detach().numpy() for t in step()))
    times = harness.time_calls(step, repeats=repeats, warmup=warmup)
    harness.emit({"times_s": times, "items": batch, "check": check,
                  "info": {"peak_rss_mb": harness.peak_rss_mb(), "threads": threads}})


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES), metavar="SHAPE",
                        help="layer shapes to time (default: all): " + ", ".join(repr(s) for s in SHAPES))
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per run")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls per run")
    parser.add_argument("--contenders", nargs="+", default=list(CONTENDERS), choices=CONTENDERS)
    parser.add_argument("--out", default=str(HERE / "results" / "layers.json"))
    parser.add_argument("--worker", choices=CONTENDERS, help=argparse.SUPPRESS)
    parser.add_argument("--shape", choices=list(SHAPES), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name in ("batch", "threads", "rounds", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name}: expected a positive integer, found {getattr(args, name)}")
    if args.worker:
        return worker(args.worker, args.shape, args.batch, args.threads, args.repeats, args.warmup)

    has_torch = importlib.util.find_spec("torch") is not None
    names = [n for n in args.contenders if has_torch or not n.startswith("pytorch")]
    env = harness.thread_env(args.threads)
    groups = {shape: [harness.Contender(name, [sys.executable, str(Path(__file__).resolve()), "--worker", name,
                                               "--shape", shape, "--batch", str(args.batch),
                                               "--threads", str(args.threads), "--repeats", str(args.repeats),
                                               "--warmup", str(args.warmup)],
                                        env={**env, "TQREF_BACKEND": "fast"})
                      for name in names]
              for shape in args.shapes}
    os.environ.pop("MALLOC_TRIM_THRESHOLD_", None)
    report = harness.run(groups, rounds=args.rounds, out=args.out, command=harness.command_line(),
                         meta={"batch": args.batch, "threads": args.threads, "repeats": args.repeats,
                               "count_in_resnet20": {s: SHAPES[s][5] for s in args.shapes}},
                         skipped={} if has_torch else {"pytorch": "torch is not installed"})
    totals = {}
    print(f"{'shape':20s} " + " ".join(f"{n:>22s}" for n in names) + "   (median ms per forward+backward)")
    for shape, summary in report["summary"].items():
        med = {n: summary[n]["median_s"] for n in names if n in summary}
        count = SHAPES[shape][5]
        for n, t in med.items():
            totals[n] = totals.get(n, 0.0) + count * t
        print(f"{shape:20s} " + " ".join(f"{1e3 * med[n]:22.2f}" for n in names if n in med))
    print(f"{'ResNet-20 total':20s} " + " ".join(f"{1e3 * totals[n]:22.2f}" for n in names if n in totals)
          + "   (× counts)")
    report["resnet20_totals_s"] = totals
    first = names[0]
    report["agreement"] = {g: {n: max(harness.relative_difference(part, ref) for part, ref in zip(c, checks[first]))
                               for n, c in checks.items()}
                           for g, checks in report["checks"].items()}
    report["agree"] = all(v <= TOLERANCE for by_name in report["agreement"].values() for v in by_name.values())
    harness.write_json(args.out, report)
    print(f"gradients agree with {first}'s (≤ {TOLERANCE:g}): {report['agree']}; "
          f"wrote {args.out} (machine idle: {report['load'].get('idle')})")
    return 0 if report["agree"] else 1


if __name__ == "__main__":
    sys.exit(main())
