"""Time one training step (forward + backward + SGD) of a CIFAR ResNet.

    python benchmarks/train_step.py                      # ResNet-20, batch 128, float32
    python benchmarks/train_step.py --model resnet56 --profile
    python benchmarks/train_step.py --threads 1 --repeats 9 --winograd 16 32 none

Prints the median images/s over ``--repeats`` steps after ``--warmup`` steps
(the first step includes Numba's compilation).  With ``--profile`` it also
prints where the time goes, per layer type and direction.  Run it with
nothing else busy: the machine has two cores.
"""

import argparse
import time
from collections import defaultdict

import numpy as np


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--profile", action="store_true", help="time each layer's forward and backward")
    parser.add_argument("--winograd", nargs="+", metavar="MIN_CHANNELS", default=None,
                        help="time steps with these settings of conv_nhwc.WINOGRAD_MIN_CHANNELS "
                             "(numbers or 'none'), interleaved step by step")
    args = parser.parse_args()

    import compare_torch

    with compare_torch.set_threads(args.threads, {"tqref"}):
        run = training_step(args.model, args.batch_size)
        step = run.step
        if args.winograd:
            return compare_winograd(step, args)
        t0 = time.perf_counter()
        step()
        first = time.perf_counter() - t0
        for _ in range(args.warmup - 1):
            step()
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
        med = float(np.median(times))
        print(f"{args.model} training step, batch {args.batch_size}, float32, {args.threads} threads: "
              f"median {med * 1e3:.0f} ms = {args.batch_size / med:.0f} images/s "
              f"(first step {first:.1f} s incl. JIT)")
        if args.profile:
            profile(run.model, run.x, run.y, run.opt)


def training_step(model_name, batch_size, ternary=False):
    """A namespace (model, opt, x, y, step): a fresh model (seed 0; with ``ternary``
    its convolutions and linear layer ternarized, Eqs. (1)-(4) at every step), its SGD
    (Nesterov momentum 0.9, weight decay 3e-4), a fixed batch of normal random
    images with labels, and step() = forward, softmax cross-entropy, backward, update."""
    from types import SimpleNamespace

    from tqref.functional import softmax_cross_entropy
    from tqref.models import get_model
    from tqref.optim import SGD

    model = get_model(model_name, seed=0)
    if ternary:
        from tqref.ternary import ternarize_model
        model = ternarize_model(model)
    model.train()
    opt = SGD(model.parameters_and_gradients(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=3e-4)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch_size, 3, 32, 32)).astype(np.float32)
    y = rng.integers(0, 10, batch_size)

    def step():
        loss, dlogits = softmax_cross_entropy(model.forward(x), y)
        model.backward(dlogits)
        opt.step()
    return SimpleNamespace(model=model, opt=opt, x=x, y=y, step=step)


def compare_winograd(step, args):
    """Median step time for each Winograd threshold, the settings taking turns
    step by step (so that a busy neighbour slows them alike)."""
    from tqref.kernels import conv_nhwc

    settings = {v: None if v.lower() == "none" else int(v) for v in args.winograd}
    for value in settings.values():
        conv_nhwc.WINOGRAD_MIN_CHANNELS = value
        for _ in range(args.warmup):
            step()
    times = {k: [] for k in settings}
    for _ in range(args.repeats):
        for k, value in settings.items():
            conv_nhwc.WINOGRAD_MIN_CHANNELS = value
            t0 = time.perf_counter()
            step()
            times[k].append(time.perf_counter() - t0)
    print(f"{args.model} training step, batch {args.batch_size}, {args.threads} threads, by WINOGRAD_MIN_CHANNELS:")
    for k, t in times.items():
        med = float(np.median(t))
        print(f"  {k:>5s}: median {med * 1e3:.0f} ms = {args.batch_size / med:.0f} images/s")


def profile(model, x, y, opt):
    """Wrap every leaf layer's forward/backward with a timer for one step."""
    from tqref.functional import softmax_cross_entropy

    totals = defaultdict(float)
    leaves = [m for _, m in model.named_modules() if not m.children()]
    methods = ("forward", "backward", "forward_relu", "backward_relu")  # the last two: fused BN (+add) + ReLU
    for layer in leaves:
        for direction in methods:
            if not hasattr(layer, direction):
                continue
            original = getattr(layer, direction)

            def timed(*a, _orig=original, _key=(type(layer).__name__, direction), **k):
                t0 = time.perf_counter()
                out = _orig(*a, **k)
                totals[_key] += time.perf_counter() - t0
                return out
            setattr(layer, direction, timed)
    t0 = time.perf_counter()
    loss, dlogits = softmax_cross_entropy(model.forward(x), y)
    model.backward(dlogits)
    t1 = time.perf_counter()
    opt.step()
    t2 = time.perf_counter()
    totals[("SGD", "step")] = t2 - t1
    step = t2 - t0
    other = step - sum(totals.values())
    totals[("(blocks, loss)", "rest")] = other
    print(f"profile of one step ({step * 1e3:.0f} ms):")
    for (kind, direction), t in sorted(totals.items(), key=lambda kv: -kv[1]):
        print(f"  {kind:16s} {direction:8s} {t * 1e3:8.1f} ms  {100 * t / step:5.1f} %")
    for layer in leaves:  # restore the class methods
        for direction in methods:
            layer.__dict__.pop(direction, None)


if __name__ == "__main__":
    main()
