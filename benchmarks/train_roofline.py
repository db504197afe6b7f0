"""Where one training step of the fast backend stands against what the machine
can do: a roofline, layer by layer, of a CIFAR ResNet's forward + backward +
SGD step, and the floor that any implementation with the same algorithms
could reach.

    python benchmarks/train_roofline.py                                  # ResNet-20, batch 128, 2 threads
    python benchmarks/train_roofline.py --out benchmarks/results/train_roofline.json

It runs ``--repeats`` ordinary training steps (``model.forward``,
``softmax_cross_entropy``, ``model.backward``, ``SGD.step``) and times every
convolution's forward and backward and every batch norm's fused forward
(BN + residual add + ReLU) and backward, layer by layer.  The roofline
uses the fastest of the steps, for the step and for each layer (on a
shared host, the least disturbed run; a roofline asks what the code can
do); the JSON keeps the medians too.  Everything else in the step
(shortcuts, pooling, the classifier, the loss, the blocks'
``dx_main + dx_skip``, SGD, Python) is "rest".

For each convolution it counts

    direct MACs   N·F·C·k²·H_out·W_out multiply-accumulates per direction
                  (forward, input gradient, weight gradient)
    products      the multiplications the backend really does in its products:
                  the direct MACs, or, where Winograd F(2×2, 3×3) applies
                  (``conv_nhwc._winograd_pays``: 3×3, stride 1, ≥ 16 channels),
                  16·C·F per 2×2 output tile (2.25× fewer); the transforms are
                  memory work and are not counted

and for each batch norm the bytes its passes move now, and the bytes a
fused implementation could not avoid:

    forward   now: statistics pass (read x) + apply pass (read x [, residual], write y)
              floor: read x [, residual], write y once (statistics computed by the
              convolution that writes x)
    backward  now: sums pass (read dout, x, y) + gradient pass (read dout, x, y,
              write dx [, dsum])
              floor: one gradient pass (the sums computed by the convolution that
              writes dout)
    (y, the output, is read for the ReLU mask; the stem's batch norm, followed
    by a separate ReLU layer, reads no y, and its ReLU counts as "rest")

Two ceilings are measured in the same process: the float32 GEMM peak (the
product of ``engine_roofline.gemm_peak``) and the memory bandwidth of a
two-array-read, one-array-write stream on --threads threads, on arrays of
each batch norm's activation size (so the caches help it as much as they
help batch norm).  The floor of the step is products / GEMM peak +
batch-norm floor bytes / bandwidth: what is left if every convolution ran
its products at the GEMM peak with free transforms and copies, and every
batch norm were fused away to its last unavoidable pass, and nothing else
cost anything.  The report compares it with PyTorch's best layout from the
committed fair benchmark (``benchmarks/results/training.json``; not
re-measured here) and with a target of 1.3× that speed (issue 25's).

Run it on an idle machine (the load is recorded); it measures tqref alone,
in one process.
"""

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))


def bandwidth_peak(threads, repeats, n):
    """Bytes per second of z = x + s·y on float32 arrays of ``n`` elements (two reads,
    one write), the elements split over ``threads`` threads."""
    import statistics

    import harness
    import numba
    import numpy as np

    x = np.ones(n, np.float32)
    y = np.ones(n, np.float32)
    z = np.empty(n, np.float32)

    @numba.njit(parallel=True, cache=False)
    def triad(z, x, y, s):  # one flat prange: Numba splits it over the threads and vectorises each part
        for i in numba.prange(x.size):
            z[i] = x[i] + s * y[i]

    numba.set_num_threads(threads)
    times = harness.time_calls(lambda: triad(z, x, y, np.float32(0.5)), repeats, 2)
    moved = 3 * n * 4
    return {"bytes_per_call": moved, "median_s": statistics.median(times), "best_s": min(times),
            "bytes_per_s_median": moved / statistics.median(times), "bytes_per_s_best": moved / min(times)}


def conv_counts(layer, x_shape):
    """Direct MACs per direction and the multiplications of the backend's products."""
    from tqref.kernels.conv_nhwc import _winograd_pays, output_size

    N, C, H, W = x_shape
    F, _, k, _ = layer.params["weight"].shape
    S, P = layer.stride, layer.padding
    Ho, Wo = output_size(H, k, S, P), output_size(W, k, S, P)
    direct = N * F * C * k * k * Ho * Wo
    winograd = S == 1 and _winograd_pays(k, k, C, F, P)
    products = N * 16 * C * F * ((Ho + 1) // 2) * ((Wo + 1) // 2) if winograd else direct
    return {"C": C, "F": F, "kernel": k, "stride": S, "in_hw": H, "out_hw": Ho, "winograd": bool(winograd),
            "direct_macs": {"forward": direct, "dx": direct, "dw": direct},
            "products": {"forward": products, "dx": products, "dw": products}}


def bn_bytes(shape, residual, fused=True, itemsize=4):
    """Bytes a batch norm moves now and at its floor, per direction; ``fused``: with the
    ReLU (whose mask the backward reads from y) and the residual add, as in a block."""
    a = int(shape[0] * shape[1] * shape[2] * shape[3]) * itemsize
    r = 1 if residual else 0
    y = 1 if fused else 0
    return {"forward": {"now": (1 + 2 + r) * a, "floor": (2 + r) * a},
            "backward": {"now": (2 + y + 3 + y + r) * a, "floor": (3 + y + r) * a}}


def instrument(model):
    """Wrap every Conv2d's and BatchNorm2d's forward/backward on the instance (for batch norm
    both pairs: the fused ``forward_relu``/``backward_relu`` and plain ``forward``/``backward``):
    per call, seconds and what the counts need."""
    from tqref.nn.layers import BatchNorm2d, Conv2d

    times = defaultdict(list)
    info = {}
    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, (Conv2d, BatchNorm2d))]
    for name, layer in layers:
        is_conv = isinstance(layer, Conv2d)
        methods = ("forward", "backward") if is_conv else ("forward", "backward", "forward_relu", "backward_relu")
        for method in methods:
            original = getattr(layer, method)
            direction = method.split("_")[0]

            def timed(*a, _orig=original, _name=name, _dir=direction, _conv=is_conv, _layer=layer,
                      _fused=method.endswith("_relu"), **k):
                if _dir == "forward":
                    info[_name] = {"shape": tuple(a[0].shape), "residual": k.get("residual") is not None,
                                   "conv": _conv, "fused": _fused, "layer": _layer}
                t0 = time.perf_counter()
                out = _orig(*a, **k)
                times[(_name, _dir)].append(time.perf_counter() - t0)
                return out
            setattr(layer, method, timed)
    return times, info


def pytorch_reference(path, model):
    """PyTorch's best layout in the committed fair benchmark: the fastest single step of each layout."""
    path = Path(path)
    if not path.is_file():
        return None
    report = json.loads(path.read_text())
    group = f"{model} fp train, batch 128"
    best = {}
    for run in report.get("runs", []):
        if run.get("group") == group and run["contender"].startswith("pytorch"):
            t = min(run["times_s"])
            best[run["contender"]] = min(best.get(run["contender"], t), t)
    if not best:
        return None
    layout = min(best, key=best.get)
    return {"file": str(path), "command": report.get("command"), "group": group,
            "best_s_by_layout": best, "best_layout": layout, "best_s": best[layout]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7, help="steps timed (the fastest of them counts, per layer)")
    parser.add_argument("--torch-json", default=str(HERE / "results" / "training.json"),
                        help="the fair benchmark's report to read PyTorch's step time from (default: %(default)s)")
    parser.add_argument("--out", help="write the JSON report here (atomically)")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats: expected a positive number of steps, found {args.repeats}")

    import statistics

    import compare_torch
    import engine_roofline
    import harness
    import numpy as np
    from train_step import training_step

    before = harness.machine_state()
    with compare_torch.set_threads(args.threads, {"tqref"}):
        peaks = {"gemm_peak": engine_roofline.gemm_peak(15), "bandwidth": {}}
        run = training_step(args.model, args.batch_size)
        model = run.model

        def step():
            t0 = time.perf_counter()
            run.step()
            return time.perf_counter() - t0

        for _ in range(2):  # compile, then settle the allocator
            step()
        times, info = instrument(model)
        steps = [step() for _ in range(args.repeats)]
        for meta in info.values():
            elements = int(np.prod(meta["shape"]))
            if not meta["conv"] and str(elements) not in peaks["bandwidth"]:
                peaks["bandwidth"][str(elements)] = bandwidth_peak(args.threads, 40, elements)
    after = harness.machine_state()

    gemm = peaks["gemm_peak"]["macs_per_s_best"]

    def medians(name):
        return {f"{d}_median_s": statistics.median(times[(name, d)]) for d in ("forward", "backward")}

    rows = []
    for name, meta in info.items():
        if meta["conv"]:
            counts = conv_counts(meta["layer"], meta["shape"])
            fwd, bwd = min(times[(name, "forward")]), min(times[(name, "backward")])
            products = sum(counts["products"].values())
            direct = sum(counts["direct_macs"].values())
            rows.append({"layer": name, "kind": "conv", **counts,
                         "forward_s": fwd, "backward_s": bwd, **medians(name),
                         "direct_floor_s": direct / gemm, "products_floor_s": products / gemm,
                         "achieved_products_per_s": products / (fwd + bwd)})
        else:
            moved = bn_bytes(meta["shape"], meta["residual"], meta["fused"])
            bandwidth = peaks["bandwidth"][str(int(np.prod(meta["shape"])))]["bytes_per_s_best"]
            fwd, bwd = min(times[(name, "forward")]), min(times[(name, "backward")])
            now = moved["forward"]["now"] + moved["backward"]["now"]
            floor = moved["forward"]["floor"] + moved["backward"]["floor"]
            rows.append({"layer": name, "kind": "batchnorm", "shape": list(meta["shape"]),
                         "residual": meta["residual"], "fused_relu": meta["fused"], "bytes": moved,
                         "forward_s": fwd, "backward_s": bwd, **medians(name),
                         "achieved_bytes_per_s": now / (fwd + bwd),
                         "now_at_bandwidth_s": now / bandwidth, "floor_s": floor / bandwidth})

    step_s = min(steps)
    conv = [r for r in rows if r["kind"] == "conv"]
    bn = [r for r in rows if r["kind"] == "batchnorm"]
    conv_s = sum(r["forward_s"] + r["backward_s"] for r in conv)
    bn_s = sum(r["forward_s"] + r["backward_s"] for r in bn)
    floor = {"conv_direct_s": sum(r["direct_floor_s"] for r in conv),
             "conv_products_s": sum(r["products_floor_s"] for r in conv),
             "batchnorm_now_at_bandwidth_s": sum(r["now_at_bandwidth_s"] for r in bn),
             "batchnorm_fused_s": sum(r["floor_s"] for r in bn)}
    floor["step_s"] = floor["conv_products_s"] + floor["batchnorm_fused_s"]
    summary = {"step_s": step_s, "step_images_per_s": args.batch_size / step_s,
               "step_median_s": statistics.median(steps),
               "conv_s": conv_s, "batchnorm_s": bn_s, "rest_s": step_s - conv_s - bn_s,
               "conv_products_share_of_gemm_peak": floor["conv_products_s"] / conv_s,
               "conv_direct_equivalent_share_of_gemm_peak": floor["conv_direct_s"] / conv_s,
               "batchnorm_share_of_bandwidth": floor["batchnorm_now_at_bandwidth_s"] / bn_s,
               "floor": floor}
    torch = pytorch_reference(args.torch_json, args.model)
    if torch is not None and args.batch_size == 128 and args.threads == 2:
        summary["pytorch"] = torch
        summary["target_s"] = torch["best_s"] / 1.3
        summary["floor_vs_pytorch"] = torch["best_s"] / floor["step_s"]
    report = {"schema": "tqref-train-roofline-1", "command": harness.command_line(),
              "machine": harness.machine_info(), "git": harness.git_state(HERE.parent),
              "model": args.model, "batch": args.batch_size, "threads": args.threads,
              "load": {"before": before, "after": after}, "peaks": peaks, "steps_s": steps,
              "layers": rows, "summary": summary}
    if args.out:
        harness.write_json(args.out, report)

    ms = 1e3
    streams = ", ".join(f"{4 * int(n) / 2**20:.0f} MB arrays {b['bytes_per_s_best'] / 1e9:.1f} GB/s"
                        for n, b in peaks["bandwidth"].items())
    print(f"GEMM peak {gemm / 1e9:.1f} GMAC/s; stream bandwidth: {streams} ({args.threads} threads)")
    print(f"{args.model} training step, batch {args.batch_size}: best {step_s * ms:.1f} ms "
          f"(median {summary['step_median_s'] * ms:.1f}) = {args.batch_size / step_s:.0f} images/s; "
          f"per layer and below: the fastest of the {len(steps)} steps")
    print(f"  convolutions {conv_s * ms:6.1f} ms   floor {floor['conv_products_s'] * ms:5.1f} ms "
          f"(products at GEMM peak; {floor['conv_direct_s'] * ms:.1f} ms if all direct)")
    print(f"  batch norm   {bn_s * ms:6.1f} ms   floor {floor['batchnorm_fused_s'] * ms:5.1f} ms "
          f"(one fused pass each way at full bandwidth; today's passes at full bandwidth: "
          f"{floor['batchnorm_now_at_bandwidth_s'] * ms:.1f} ms)")
    print(f"  rest         {summary['rest_s'] * ms:6.1f} ms   floor   0.0 ms")
    print(f"  step floor {floor['step_s'] * ms:.1f} ms")
    if "pytorch" in summary:
        print(f"PyTorch {torch['best_layout']} best step {torch['best_s'] * ms:.1f} ms in {torch['file']} "
              f"(where tqref's ratio to it is measured fairly); 1.3x that speed is {summary['target_s'] * ms:.1f} ms; "
              f"the floor would be {summary['floor_vs_pytorch']:.2f}x")
    print(f"{'layer':22s} {'shape':>16s} {'fwd ms':>7s} {'bwd ms':>7s} {'floor ms':>8s} {'% of peak':>9s}")
    for r in rows:
        if r["kind"] == "conv":
            shape = f"{r['C']}>{r['F']} {r['in_hw']}/{r['stride']}{' W' if r['winograd'] else ''}"
            share = r["products_floor_s"] / (r["forward_s"] + r["backward_s"])
            floor_s = r["products_floor_s"]
        else:
            shape = "bn" + ("+res" if r["residual"] else "")
            share = r["now_at_bandwidth_s"] / (r["forward_s"] + r["backward_s"])
            floor_s = r["floor_s"]
        print(f"{r['layer']:22s} {shape:>16s} {r['forward_s'] * ms:7.2f} {r['backward_s'] * ms:7.2f} "
              f"{floor_s * ms:8.2f} {100 * share:8.0f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
