"""Where the add-only ternary engine stands against what the machine can do:
a roofline, layer by layer, of ``tqref.kernels.ternary_engine.ternary_conv2d``
next to the dense convolution of the fast backend.

    python benchmarks/engine_roofline.py                       # trained ResNet-20, batches 1 and 256, 2 threads
    python benchmarks/engine_roofline.py --out benchmarks/results/engine_roofline.json

For every convolution of a trained packed ResNet (``results/resnet20-ternary``
by default) it measures, at each batch size, the seconds per call of

    engine        ternary_conv2d (phase split, adds and subtracts of the non-zero codes,
                  one multiply per output value, bias, shortcut and ReLU included)
    phase split   the engine's input rearrangement alone (part of "engine")
    dense         the fast backend's conv2d_forward on the decoded weights α·T
                  (channels-last input, as the dense model keeps it; Winograd where it applies)

and counts, per image,

    adds          one add or subtract per non-zero code and output pixel
                  (``PackedModel.operation_counts``): the engine's useful work
    MACs          F·C·HH·WW·H_out·W_out multiply-accumulates of a direct dense convolution

Two ceilings, measured on this machine in the same process:

    add peak      the engine's own inner loop (``_add_taps``: four windows added into an
                  accumulator per pass) on data that fits in the L1 cache, all threads:
                  the most adds per second the engine's loop structure can deliver
    GEMM peak     a float32 matrix product of the size of a large layer's im2col
                  (NumPy's BLAS), all threads: multiply-accumulates per second

From them: the engine's floor = adds / add peak, the direct dense floor =
MACs / GEMM peak, the achieved share of each peak, and the speed-up the
engine could reach over dense if both ran at their peaks (MACs/GEMM peak
over adds/add peak).  The JSON report holds every number; the table
printed at the end is its summary.  Run it on an idle machine (the load is
recorded); it is a measurement of tqref alone, in one process.
"""

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))


def _median_time(fn, repeats, warmup):
    """(median, best) seconds per call of ``fn`` (``harness.time_calls``)."""
    import statistics

    import harness
    times = harness.time_calls(fn, repeats, warmup)
    return statistics.median(times), min(times)


def add_peak(threads, repeats):
    """Adds per second of ``_add_taps`` on L1-resident data (each thread its own accumulator)."""
    import numba
    import numpy as np

    from tqref.kernels.ternary_engine import _add_taps

    L, taps = 512, 64                                   # 2 KB accumulator, windows inside a 4 KB image
    x = np.random.default_rng(0).standard_normal(1024 + L).astype(np.float32)
    offsets = (np.arange(taps) * 7 % 1024).astype(np.int64)
    passes = 200

    @numba.njit(parallel=True, cache=False)
    def run(x, offsets, L, passes, workers):
        total = 0.0
        for w in numba.prange(workers):
            acc = np.zeros(L, dtype=x.dtype)
            for _ in range(passes):
                _add_taps(acc, x, offsets, 0, offsets.size, 1, L)
            total += acc[0]
        return total

    numba.set_num_threads(threads)
    median, best = _median_time(lambda: run(x, offsets, L, passes, threads), repeats, 3)
    adds = threads * passes * taps * L
    return {"adds_per_call": adds, "median_s": median, "best_s": best,
            "adds_per_s_median": adds / median, "adds_per_s_best": adds / best}


def gemm_peak(repeats):
    """Multiply-accumulates per second of a float32 product (2,048 × 576) · (576 × 64):
    one 64-channel 3×3 layer's im2col at 8×8 pixels and 32 images."""
    import numpy as np
    rng = np.random.default_rng(0)
    a = rng.standard_normal((2048, 576)).astype(np.float32)
    b = rng.standard_normal((576, 64)).astype(np.float32)
    out = np.empty((2048, 64), np.float32)
    median, best = _median_time(lambda: np.matmul(a, b, out=out), repeats, 3)
    macs = 2048 * 576 * 64
    return {"macs_per_call": macs, "median_s": median, "best_s": best,
            "macs_per_s_median": macs / median, "macs_per_s_best": macs / best}


def layer_rows(packed, batch, repeats, warmup):
    """One dict per ternary convolution of ``packed``: shapes, counts and times at ``batch``.
    Sizes and counts come from ``PackedModel.operation_counts`` (32×32 images)."""
    import numpy as np

    from tqref.kernels import ops as fast_ops
    from tqref.kernels.ternary_engine import phase_split, ternary_conv2d

    rng = np.random.default_rng(1)
    counts = {entry["name"]: entry for entry in packed.operation_counts((32, 32))["layers"]}
    rows, size = [], 32
    for layer in packed.layers:
        if layer.kind != "conv":
            continue
        entry = counts[layer.name]
        H, Ho = size, entry["output_hw"][0]
        size = Ho
        if not layer.ternary:
            continue
        F, C, HH, WW = layer.weight_shape
        S, P = layer.stride, layer.padding
        plan = packed._plan(layer)
        x = rng.standard_normal((batch, C, H, H)).astype(np.float32)
        x_channels_last = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
        alpha = np.asarray(layer.alpha, np.float32).reshape(layer.codes.shape[0], -1)
        w = sum(alpha[g].reshape(-1, 1, 1, 1) * layer.codes[g] for g in range(layer.codes.shape[0]))
        w = np.ascontiguousarray(w, dtype=np.float32)
        engine = _median_time(lambda: ternary_conv2d(x, plan, S, P, relu=True), repeats, warmup)
        split = _median_time(lambda: phase_split(x, S, P), repeats, warmup)
        dense = _median_time(lambda: fast_ops.conv2d_forward(x_channels_last, w, None, S, P), repeats, warmup)
        rows.append({"layer": layer.name, "C": C, "F": F, "kernel": HH, "stride": S, "in_hw": H, "out_hw": Ho,
                     "nonzero_share": float(np.count_nonzero(layer.codes) / layer.codes.size),
                     "adds_per_image": entry["adds"], "macs_per_image": entry["dense_macs"],
                     "input_bytes_per_image": C * H * H * 4, "output_bytes_per_image": F * Ho * Ho * 4,
                     "engine_s": engine[0], "engine_best_s": engine[1],
                     "phase_split_s": split[0], "dense_s": dense[0], "dense_best_s": dense[1]})
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default="results/resnet20-ternary", help="a finished ternary run folder with "
                        "final.packed.npz (default: %(default)s)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 256])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7, help="median of this many calls per measurement")
    parser.add_argument("--out", help="write the JSON report here (atomically)")
    args = parser.parse_args(argv)

    import harness
    import numba
    from threadpoolctl import threadpool_limits

    from tqref.deploy import load_packed  # before set_num_threads: tqref.kernels sets OMP_WAIT_POLICY first

    numba.set_num_threads(args.threads)
    packed_file = Path(args.run) / "final.packed.npz"
    if not packed_file.is_file():
        raise SystemExit(f"engine_roofline: --run: expected a run folder with final.packed.npz, "
                         f"found no {packed_file}")
    packed = load_packed(packed_file)
    before = harness.machine_state()
    with threadpool_limits(args.threads):  # BLAS (the GEMM peak, the dense convolutions) on --threads too
        peaks = {"add_peak": add_peak(args.threads, args.repeats), "gemm_peak": gemm_peak(args.repeats)}
        batches = {}
        for batch in args.batches:
            repeats = args.repeats if batch > 8 else 10 * args.repeats
            batches[str(batch)] = layer_rows(packed, batch, repeats, warmup=2)
    after = harness.machine_state()
    add_rate = peaks["add_peak"]["adds_per_s_best"]
    mac_rate = peaks["gemm_peak"]["macs_per_s_best"]
    summary = {}
    for batch, rows in batches.items():
        n = int(batch)
        adds = sum(r["adds_per_image"] for r in rows) * n
        macs = sum(r["macs_per_image"] for r in rows) * n
        engine = sum(r["engine_s"] for r in rows)
        dense = sum(r["dense_s"] for r in rows)
        summary[batch] = {
            "engine_s": engine, "dense_s": dense, "phase_split_s": sum(r["phase_split_s"] for r in rows),
            "engine_vs_dense": dense / engine,
            "engine_adds_per_s": adds / engine, "engine_share_of_add_peak": adds / engine / add_rate,
            "dense_direct_macs_per_s": macs / dense, "dense_share_of_gemm_peak": macs / dense / mac_rate,
            "engine_floor_s": adds / add_rate, "dense_direct_floor_s": macs / mac_rate,
            "engine_vs_dense_at_both_peaks": (macs / mac_rate) / (adds / add_rate)}
    report = {"schema": "tqref-roofline-1", "command": harness.command_line(), "machine": harness.machine_info(),
              "git": harness.git_state(HERE.parent), "run": args.run, "threads": args.threads,
              "load": {"before": before, "after": after}, "peaks": peaks, "layers": batches, "summary": summary}
    if args.out:
        harness.write_json(args.out, report)
    print(f"add peak {add_rate / 1e9:.1f} Gadd/s, GEMM peak {mac_rate / 1e9:.1f} GMAC/s ({args.threads} threads)")
    print(f"{'batch':>5} {'engine ms':>10} {'dense ms':>9} {'eng/dense':>9} {'eng % add peak':>15} "
          f"{'dense % GEMM peak':>18} {'at both peaks':>14}")
    for batch, s in summary.items():
        print(f"{batch:>5} {1e3 * s['engine_s']:>10.2f} {1e3 * s['dense_s']:>9.2f} {s['engine_vs_dense']:>8.2f}x "
              f"{100 * s['engine_share_of_add_peak']:>14.0f}% {100 * s['dense_share_of_gemm_peak']:>17.0f}% "
              f"{s['engine_vs_dense_at_both_peaks']:>13.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
