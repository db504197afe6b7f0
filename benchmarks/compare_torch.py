"""tqref against PyTorch CPU on the same machine, in the same run.

    python benchmarks/compare_torch.py                 # everything (≈ 10 min on 2 cores)
    python benchmarks/compare_torch.py --quick         # ResNet-20, FP, train + infer, few repeats
    python benchmarks/compare_torch.py --json out.json --models resnet20 --variants fp ternary

For every configuration (model × variant × mode) both frameworks get the
same shapes and the same thread count (2 by default: ``numba.set_num_threads``
and ``threadpoolctl`` for tqref, ``torch.set_num_threads`` for PyTorch), are
warmed up, and then timed *interleaved* — tqref step, PyTorch step, tqref
step, ... — so that a neighbour stealing a core slows both alike.  Reported:
median images/s of each, the ratio tqref / PyTorch, the achieved GFLOP/s as
a percentage of the machine's measured sgemm rate (numpy, 2048², measured
at the start), and the peak resident memory of each framework measured in
its own subprocess (``ru_maxrss`` after a few steps of that configuration
alone, from /proc/self/status VmHWM: it includes the interpreter and the
framework's libraries).

Modes: ``train`` = forward + loss + backward + SGD step (momentum 0.9,
Nesterov, weight decay), batch 128; ``infer`` = evaluation-mode forward,
batch 256 (PyTorch under ``torch.no_grad()``).

Variants: ``fp`` full precision; ``ternary`` = tqref's
``ternarize_model(model)`` (Eqs. 1–4: Δ, α and codes recomputed from the
latent weights at every forward pass, straight-through gradient), and on
the PyTorch side the *same* computation written in torch: every conv and
the linear layer ternarize their weight in ``forward`` (Δ = 0.05·max|W|,
α = mean|W| over |W| ≥ Δ, W' = α·T) and pass the gradient straight through
with the |W| < 1 mask; ``tex2`` = the same with t_ex = 2 (δ = 0.05, 0.10,
W_eff = α₁T₁ + α₂T₂, gradient × 2).  Both sides run one convolution with
W_eff per layer.

The PyTorch model is defined here: the CIFAR ResNet of He et al. with
option-A shortcuts (zero-padded channels, stride-2 subsampling), the same
shapes as ``tqref.models``; NCHW (PyTorch's default) unless
``--torch-channels-last``.

--json PATH writes a list with one object per configuration: model,
variant, mode, batch, tqref_img_s, torch_img_s, ratio, peak_rss_mb
({"tqref": .., "torch": ..}), pct_sgemm_peak ({"tqref": .., "torch": ..}).
"""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

import numpy as np

MODELS = ("resnet20", "resnet56")
VARIANTS = ("fp", "ternary", "tex2")
MODES = ("train", "infer")
T_EX = {"fp": None, "ternary": 1, "tex2": 2}


# ---------------------------------------------------------------------------
# PyTorch side
# ---------------------------------------------------------------------------

def torch_model(depth, variant, channels_last=False):
    import torch
    import torch.nn as nn
    import torch.nn.functional as Fn

    t_ex = T_EX[variant]
    deltas = {1: (0.05,), 2: (0.05, 0.10)}.get(t_ex, ())

    def effective(w):
        """W_eff = Σ_k α_k T_k, straight-through gradient t_ex · 1[|W| < 1]."""
        if t_ex is None:
            return w
        with torch.no_grad():
            a = w.abs()
            m = a.max()
            weff = torch.zeros_like(w)
            for d in deltas:
                sel = a >= d * m
                alpha = a[sel].mean() if bool(sel.any()) else w.new_zeros(())
                weff += alpha * torch.sign(w) * sel
            mask = (a < 1).to(w.dtype)
        return weff + t_ex * mask * (w - w.detach())

    class Conv(nn.Conv2d):
        def forward(self, x):
            return self._conv_forward(x, effective(self.weight), self.bias)

    class Lin(nn.Linear):
        def forward(self, x):
            return Fn.linear(x, effective(self.weight), self.bias)

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = Conv(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = Conv(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.pad = (cout - cin) // 2 if (stride != 1 or cin != cout) else None

        def forward(self, x):
            out = Fn.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            skip = x if self.pad is None else Fn.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))
            return Fn.relu(out + skip)

    class ResNet(nn.Module):
        def __init__(self, n):
            super().__init__()
            self.conv1 = Conv(3, 16, 3, 1, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(16)
            layers, cin = [], 16
            for cout, stride in ((16, 1), (32, 2), (64, 2)):
                blocks = [Block(cin, cout, stride)] + [Block(cout, cout, 1) for _ in range(n - 1)]
                layers.append(nn.Sequential(*blocks))
                cin = cout
            self.layer1, self.layer2, self.layer3 = layers
            self.linear = Lin(64, 10)

        def forward(self, x):
            out = Fn.relu(self.bn1(self.conv1(x)))
            out = self.layer3(self.layer2(self.layer1(out)))
            return self.linear(Fn.adaptive_avg_pool2d(out, 1).flatten(1))

    model = ResNet((depth - 2) // 6)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def torch_step_fn(depth, variant, mode, batch, channels_last=False):
    import torch

    model = torch_model(depth, variant, channels_last)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, 32, 32, generator=g)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,), generator=g)
    if mode == "train":
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=3e-4)
        loss_fn = torch.nn.CrossEntropyLoss()

        def step():
            opt.zero_grad(set_to_none=True)
            loss_fn(model(x), y).backward()
            opt.step()
    else:
        model.eval()

        def step():
            with torch.no_grad():
                model(x)
    return step


# ---------------------------------------------------------------------------
# tqref side
# ---------------------------------------------------------------------------

def tqref_step_fn(depth, variant, mode, batch):
    from tqref.functional import softmax_cross_entropy
    from tqref.models import get_model
    from tqref.optim import SGD
    from tqref.ternary import ternarize_model

    model = get_model(f"resnet{depth}", seed=0)
    if T_EX[variant] is not None:
        ternarize_model(model, t_ex=T_EX[variant])
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, 3, 32, 32)).astype(np.float32)
    y = rng.integers(0, 10, batch)
    if mode == "train":
        model.train()
        opt = SGD(model.parameters_and_gradients(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=3e-4)

        def step():
            _, dlogits = softmax_cross_entropy(model.forward(x), y)
            model.backward(dlogits)
            opt.step()
    else:
        model.eval()
        from tqref.nn import no_grad

        def step():
            with no_grad():  # like torch.no_grad() on the other side: no caches kept
                model.forward(x)
    return step


# ---------------------------------------------------------------------------
# measuring
# ---------------------------------------------------------------------------

def set_threads(n, frameworks):
    """Fix every thread pool to n threads; returns the threadpoolctl limiter (keep it alive)."""
    from threadpoolctl import threadpool_limits

    if "torch" in frameworks:
        import torch
        torch.set_num_threads(n)
        torch.set_num_interop_threads(1)
    if "tqref" in frameworks:
        import numba

        import tqref.kernels  # noqa: F401  (first: sets tqref's OMP_WAIT_POLICY before Numba's pool starts)
        numba.set_num_threads(n)
    return threadpool_limits(limits=n)


def forward_macs(depth):
    """Multiply-accumulates of one forward pass of a CIFAR ResNet (convs + linear)."""
    n = (depth - 2) // 6
    macs = 32 * 32 * 3 * 9 * 16  # conv1
    size, cin = 32, 16
    for cout, stride in ((16, 1), (32, 2), (64, 2)):
        for b in range(n):
            s = stride if b == 0 else 1
            size_out = size // s
            macs += size_out * size_out * cout * 9 * (cin if b == 0 else cout)  # conv1 of the block
            macs += size_out * size_out * cout * 9 * cout  # conv2
            size, cin = size_out, cout
    return macs + 64 * 10


def sgemm_peak(threads, repeats=5):
    """GFLOP/s of numpy's float32 2048² matrix product (the machine's practical peak)."""
    a = np.random.default_rng(0).standard_normal((2048, 2048)).astype(np.float32)
    b = a.copy()
    a @ b
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    return 2 * 2048 ** 3 / min(times) / 1e9


def rss_probe(framework, depth, variant, mode, batch, threads, steps):
    """Run one configuration of one framework alone; print its peak RSS in MB."""
    limiter = set_threads(threads, {framework})  # noqa: F841
    if framework == "torch":
        fn = torch_step_fn(depth, variant, mode, batch)
    else:
        fn = tqref_step_fn(depth, variant, mode, batch)
    for _ in range(steps):
        fn()
    print(json.dumps({"peak_rss_mb": peak_rss_mb()}))


def peak_rss_mb():
    """This process's peak resident set size (MB).  VmHWM, not ru_maxrss:
    Linux carries ru_maxrss over fork + exec, so a child would report its
    parent's peak."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure_rss(framework, depth, variant, mode, batch, threads, steps):
    cmd = [sys.executable, os.path.abspath(__file__), "--rss-probe", framework, str(depth), variant, mode,
           str(batch), "--threads", str(threads), "--rss-steps", str(steps)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        print(proc.stderr, file=sys.stderr)
        return float("nan")
    return json.loads(proc.stdout.strip().splitlines()[-1])["peak_rss_mb"]


def time_interleaved(fns, warmup, repeats):
    """fns: dict name -> step; returns dict name -> list of seconds."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return times


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--train-batch", type=int, default=128)
    parser.add_argument("--infer-batch", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--no-rss", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument("--rss-steps", type=int, default=3)
    parser.add_argument("--torch-channels-last", action="store_true")
    parser.add_argument("--quick", action="store_true",
                        help="ResNet-20, full precision, 3 repeats, no memory probes: a sanity run")
    parser.add_argument("--json", metavar="PATH")
    parser.add_argument("--rss-probe", nargs=5, metavar=("FRAMEWORK", "DEPTH", "VARIANT", "MODE", "BATCH"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.rss_probe:
        fw, depth, variant, mode, batch = args.rss_probe
        rss_probe(fw, int(depth), variant, mode, int(batch), args.threads, args.rss_steps)
        return
    if args.quick:
        args.models, args.variants, args.repeats, args.warmup, args.no_rss = ["resnet20"], ["fp"], 3, 1, True

    # torch first: its OpenMP runtime reads OMP_WAIT_POLICY when it loads, and
    # tqref sets PASSIVE for its own (Numba's) runtime on import.
    import torch  # noqa: F401

    import tqref  # noqa: F401

    limiter = set_threads(args.threads, {"tqref", "torch"})  # noqa: F841
    peak = sgemm_peak(args.threads)
    print(f"{platform.processor() or platform.machine()}, {args.threads} threads; numpy sgemm 2048²: "
          f"{peak:.0f} GFLOP/s; torch {torch.__version__}, "
          f"{'channels-last' if args.torch_channels_last else 'NCHW'}")
    print(f"{'model':9s} {'variant':8s} {'mode':6s} {'batch':>5s} {'tqref img/s':>12s} {'torch img/s':>12s} "
          f"{'ratio':>6s} {'%peak tq/pt':>12s} {'RSS MB tq/pt':>14s}")
    results = []
    for model in args.models:
        depth = int(model.removeprefix("resnet"))
        macs = forward_macs(depth)
        for variant in args.variants:
            for mode in args.modes:
                batch = args.train_batch if mode == "train" else args.infer_batch
                fns = {"tqref": tqref_step_fn(depth, variant, mode, batch),
                       "torch": torch_step_fn(depth, variant, mode, batch, args.torch_channels_last)}
                times = time_interleaved(fns, args.warmup, args.repeats)
                del fns
                ips = {k: batch / float(np.median(v)) for k, v in times.items()}
                flops = 2 * macs * (3 if mode == "train" else 1)
                pct = {k: 100 * v * flops / 1e9 / peak for k, v in ips.items()}
                rss = {"tqref": float("nan"), "torch": float("nan")}
                if not args.no_rss:
                    for fw in rss:
                        rss[fw] = measure_rss(fw, depth, variant, mode, batch, args.threads, args.rss_steps)
                row = {"model": model, "variant": variant, "mode": mode, "batch": batch,
                       "tqref_img_s": round(ips["tqref"], 1), "torch_img_s": round(ips["torch"], 1),
                       "ratio": round(ips["tqref"] / ips["torch"], 3),
                       "peak_rss_mb": {k: round(v, 0) for k, v in rss.items()},
                       "pct_sgemm_peak": {k: round(v, 1) for k, v in pct.items()},
                       "threads": args.threads}
                results.append(row)
                print(f"{model:9s} {variant:8s} {mode:6s} {batch:5d} {ips['tqref']:12.1f} {ips['torch']:12.1f} "
                      f"{row['ratio']:6.2f} {pct['tqref']:5.1f}/{pct['torch']:<5.1f} "
                      f"{rss['tqref']:6.0f}/{rss['torch']:<6.0f}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
