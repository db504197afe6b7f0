"""Inference speed of a ternary ResNet-20: packed add-only engine vs dense float paths.

    python benchmarks/packed_inference.py                    # batch 1 and 256, t_ex = 1
    python benchmarks/packed_inference.py --t-ex 2 --json

In one run, for each batch size, the median wall-clock of one forward pass of

    packed    tqref.deploy.PackedModel.forward: folded BN, 2-bit codes unpacked into
              index lists, Numba add-only kernels (tqref.kernels.ternary_engine)
    dense     the tqref model in evaluation mode (im2col + BLAS with W_eff = Σ α_k T_k)
    torch     PyTorch CPU float32, the same CIFAR ResNet-20 (option-A shortcuts, defined
              below) loaded with W_eff and the BN statistics, under torch.inference_mode()
              (skipped when torch is not installed)

with latency (ms per batch), images/s, and the operations per image next to
them (adds, skipped zeros, multiplies for packed; MACs for the dense paths).
All three are checked to give the same logits first.  The model is untrained
(resnet20(seed=0), BN statistics from a few random batches): speed does not
depend on training, except through sparsity (printed; trained ternary
ResNets are usually sparser, hence faster on the packed engine).

The machine is shared: run the three back to back, compare the ratios of one
run, and repeat the run when it matters.
"""

import argparse
import json
import os
import platform
import time

import numpy as np


def build_models(t_ex, seed=0):
    from tqref.deploy import PackedModel
    from tqref.models import resnet20
    from tqref.ternary import ternarize_model

    model = ternarize_model(resnet20(seed=seed), t_ex=t_ex)
    rng = np.random.default_rng(seed)
    model.train()
    for _ in range(3):  # non-trivial BN running statistics
        model.forward(rng.standard_normal((32, 3, 32, 32)).astype(np.float32))
    model.eval()
    return model, PackedModel.from_model(model)


def torch_resnet20(model):
    """The CIFAR ResNet-20 in PyTorch (option-A shortcuts), weights = tqref's W_eff."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as TF

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.pad = (cout - cin) // 2 if (stride != 1 or cin != cout) else None

        def forward(self, x):
            out = TF.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            skip = x if self.pad is None else TF.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))
            return TF.relu(out + skip)

    class ResNet(nn.Module):
        def __init__(self, n=3, num_classes=10):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(16)
            stages, cin = [], 16
            for s, planes in enumerate((16, 32, 64)):
                blocks = []
                for b in range(n):
                    blocks.append(Block(cin, planes, 2 if (s > 0 and b == 0) else 1))
                    cin = planes
                stages.append(nn.Sequential(*blocks))
            self.layer1, self.layer2, self.layer3 = stages
            self.linear = nn.Linear(64, num_classes)

        def forward(self, x):
            out = TF.relu(self.bn1(self.conv1(x)))
            out = self.layer3(self.layer2(self.layer1(out)))
            return self.linear(out.mean(dim=(2, 3)))

    net = ResNet((model.depth - 2) // 6, model.num_classes)
    state = {name: np.asarray(v, np.float32) for name, v in model.state_dict().items()}
    for name, module in model.named_modules():
        if callable(getattr(module, "effective_weight", None)):
            state[f"{name}.weight"] = np.asarray(module.effective_weight(), np.float32)
    net.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=False)
    return net.eval()


def median_time(fn, repeats, warmup=1):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 256])
    parser.add_argument("--t-ex", type=int, default=1, choices=(1, 2, 4))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats-small", type=int, default=30, help="timed runs at batch ≤ 8")
    parser.add_argument("--repeats-large", type=int, default=5, help="timed runs at larger batches")
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)

    # tqref.kernels sets OMP_WAIT_POLICY=PASSIVE; it must happen before torch loads its
    # OpenMP runtime, or torch's idle threads spin and steal the two cores from
    # Numba and OpenBLAS (measured: packed batch 1 went from ~10 ms to ~200 ms).
    import tqref.kernels  # noqa: F401
    import numba
    from threadpoolctl import threadpool_limits

    numba.set_num_threads(args.threads)
    model, packed = build_models(args.t_ex)
    counts = packed.operation_counts((32, 32))["totals"]
    rng = np.random.default_rng(1)
    inputs = {n: rng.standard_normal((n, 3, 32, 32)).astype(np.float32) for n in args.batch_sizes}
    x_check = rng.standard_normal((4, 3, 32, 32)).astype(np.float32)
    ref = model.forward(x_check)
    scale = float(np.abs(ref).max())
    checks = {"packed": float(np.abs(packed.forward(x_check) - ref).max()) / scale}
    results = {n: {"batch": n} for n in args.batch_sizes}

    def record(name, n, fn):
        t = median_time(fn, args.repeats_small if n <= 8 else args.repeats_large)
        results[n][name] = {"ms": 1e3 * t, "images_per_s": n / t}

    with threadpool_limits(limits=args.threads):
        for n, x in inputs.items():
            record("packed", n, lambda: packed.forward(x))
            record("dense", n, lambda: model.forward(x))
    # PyTorch last: once its OpenMP runtime has run, the Numba and OpenBLAS
    # thread pools of the tqref paths were measured up to 40x slower at batch 1
    # (threads of the two runtimes competing for the two cores).
    torch = None
    if not args.no_torch:
        try:
            import torch
        except ImportError:
            torch = None
    if torch is not None:
        torch.set_num_threads(args.threads)
        net = torch_resnet20(model)
        with torch.inference_mode():
            checks["torch"] = float(np.abs(net(torch.from_numpy(x_check)).numpy() - ref).max()) / scale
            for n, x in inputs.items():
                xt = torch.from_numpy(x)
                record("torch", n, lambda: net(xt))
    for row in results.values():
        row["packed_speedup_vs_dense"] = row["dense"]["ms"] / row["packed"]["ms"]
        if "torch" in row:
            row["packed_speedup_vs_torch"] = row["torch"]["ms"] / row["packed"]["ms"]
    results = list(results.values())

    report = {
        "model": f"resnet20 ternary t_ex={args.t_ex} (untrained, seed 0)", "threads": args.threads,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores", "numba": numba.__version__,
        "torch": None if torch is None else torch.__version__,
        "max_relative_logit_difference_vs_tqref": checks,
        "operations_per_image": {
            "packed_adds": counts["adds"], "packed_skipped_zeros": counts["skipped"],
            "packed_multiplies": counts["multiplies"], "packed_other_adds": counts["other_adds"],
            "dense_macs": counts["dense_macs"], "sparsity_skipped_fraction": counts["skipped_fraction"]},
        "results": results,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    ops = report["operations_per_image"]
    print(f"{report['model']}, {args.threads} threads, {report['machine']}, torch {report['torch']}")
    print("logits vs tqref (max relative difference): "
          + ", ".join(f"{k} {v:.1e}" for k, v in checks.items()))
    print(f"operations per image: packed {ops['packed_adds'] / 1e6:.1f}M adds, "
          f"{ops['packed_skipped_zeros'] / 1e6:.1f}M skipped zeros ({100 * ops['sparsity_skipped_fraction']:.1f}%), "
          f"{ops['packed_multiplies'] / 1e6:.2f}M multiplies, {ops['packed_other_adds'] / 1e6:.2f}M other adds; "
          f"dense/torch {ops['dense_macs'] / 1e6:.1f}M MACs")
    for row in results:
        parts = [f"{name} {row[name]['ms']:.1f} ms ({row[name]['images_per_s']:.0f} img/s)"
                 for name in ("packed", "dense", "torch") if name in row]
        ratio = f"packed is {row['packed_speedup_vs_dense']:.2f}x dense"
        if "packed_speedup_vs_torch" in row:
            ratio += f", {row['packed_speedup_vs_torch']:.2f}x torch"
        print(f"batch {row['batch']:>4}: " + ", ".join(parts) + f"   [{ratio}]")


if __name__ == "__main__":
    main()
