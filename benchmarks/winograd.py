"""Winograd F(2×2, 3×3) against the current stride-1 convolution, at ResNet-20 shapes.

    python benchmarks/winograd.py                       # float32, 2 threads, 11 repeats
    python benchmarks/winograd.py --block-bytes 262144 524288 1048576   # block-size sweep

For each 3×3, stride-1, padding-1 layer shape of a CIFAR ResNet-20 (batch
128 for training, 256 for inference) it times, interleaved repeat by repeat
(so that a noisy neighbour hurts both alike), after one warm-up call each:

    direct     tqref.kernels.conv_nhwc.conv_forward_nhwc(x, w, 1, 1)
               (per image: row columns + 3 BLAS products, in one Numba call per thread)
    winograd   tqref.kernels.winograd.conv3x3_winograd_nhwc(x, w, 1)
               (per block of tile rows: input transform, 16 BLAS products, output transform)

and prints median milliseconds, GFLOP/s counted as for direct convolution,
2·N·Ho·Wo·F·C·9 (for Winograd an "effective" rate: it does 2.25× fewer
multiplications in its products), and direct / winograd (> 1: Winograd is
faster), and how far apart the two outputs are (max |difference| / max
|output|).  The machine has two cores: run it with nothing else busy.
"""

import argparse
import time

import numpy as np

SHAPES = [  # (N, C = F, H = W)
    (128, 16, 32), (128, 32, 16), (128, 64, 8),
    (256, 16, 32), (256, 32, 16), (256, 64, 8),
]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    parser.add_argument("--block-bytes", type=int, nargs="+", default=[None],
                        help="Winograd block budgets to compare (default: winograd.BLOCK_BYTES)")
    parser.add_argument("--batches", type=int, nargs="+", default=[128, 256])
    args = parser.parse_args(argv)

    import numba
    from threadpoolctl import threadpool_limits

    from tqref.kernels import blas
    from tqref.kernels import conv_nhwc as kc
    from tqref.kernels import winograd as wg

    numba.set_num_threads(args.threads)
    dtype = np.dtype(args.dtype)
    variants = [("direct", None)] + [("winograd" if b is None else f"winograd {b // 1024}K", b)
                                     for b in args.block_bytes]
    print(f"{args.dtype}, {args.threads} thread{'s' if args.threads != 1 else ''}, padding 1, "
          f"median of {args.repeats} "
          f"(interleaved, after warm-up); BLAS: {blas.BLAS}; "
          f"default Winograd block {wg.BLOCK_BYTES // 1024} KB")
    header = f"{'N':>4} {'C=F':>4} {'HxW':>6} |" + "".join(f" {name:>16} ms  GF/s |" for name, _ in variants)
    print(header + "  direct/winograd  max rel diff")
    rng = np.random.default_rng(0)
    with threadpool_limits(limits=args.threads):
        for N, C, HW in SHAPES:
            if N not in args.batches:
                continue
            x = rng.standard_normal((N, HW, HW, C)).astype(dtype)
            w = (rng.standard_normal((C, C, 3, 3)) / np.sqrt(9 * C)).astype(dtype)

            def run(name, b):
                if name == "direct":
                    return kc.conv_forward_nhwc(x, w, 1, 1)
                return wg.conv3x3_winograd_nhwc(x, w, 1, block_bytes=b)

            ref = run("direct", None)  # warm-up (JIT, scratch buffers) and the check
            diff = max(float(np.abs(run(name, b) - ref).max()) for name, b in variants[1:])
            diff /= float(np.abs(ref).max())
            times = {name: [] for name, _ in variants}
            for r in range(args.repeats):
                order = variants if r % 2 == 0 else variants[::-1]  # alternate who goes first
                for name, b in order:
                    t0 = time.perf_counter()
                    run(name, b)
                    times[name].append(time.perf_counter() - t0)
            flop = 2.0 * N * HW * HW * C * C * 9
            med = {name: float(np.median(ts)) for name, ts in times.items()}
            cells = "".join(f" {1e3 * med[name]:16.2f}    {flop / med[name] / 1e9:4.0f} |" for name, _ in variants)
            ratios = " ".join(f"{med['direct'] / med[name]:.2f}" for name, _ in variants[1:])
            print(f"{N:>4} {C:>4} {HW:>3}x{HW:<2} |{cells}  {ratios:>15}  {diff:.1e}")


if __name__ == "__main__":
    main()
