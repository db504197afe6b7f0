"""Winograd F(2×2, 3×3) against the current stride-1 convolution, at ResNet-20 shapes.

    python benchmarks/winograd.py                       # float32, 2 threads, 11 repeats
    python benchmarks/winograd.py --block-bytes 262144 524288 1048576   # block-size sweep
    python benchmarks/winograd.py --what weight-grad --threads 2 1 --batches 128
                                                        # the weight gradient, 2 and 1 threads

For each 3×3, stride-1, padding-1 layer shape of a CIFAR ResNet-20 (batch
128 for training, 256 for inference) it times, interleaved repeat by repeat
(so that a noisy neighbour hurts both alike), after one warm-up call each:

    forward (--what forward, the default)
    direct     tqref.kernels.conv_nhwc.conv_forward_nhwc(x, w, 1, 1)
               (per image: row columns + 3 BLAS products, in one Numba call per thread;
               conv_nhwc.WINOGRAD_MIN_CHANNELS is switched off in this process, else
               conv_forward_nhwc would itself use Winograd from 16 channels)
    winograd   tqref.kernels.winograd.conv3x3_winograd_nhwc(x, w, 1)
               (per block of tile rows: input transform, 16 BLAS products, output transform)

    weight gradient (--what weight-grad)
    direct     tqref.kernels.conv_nhwc.conv_backward_nhwc(x, w, dout, 1, 1, need_dx=False)
               (per image: row columns + 3 BLAS products Xᵀ @ dout, β = 1)
    winograd   tqref.kernels.winograd.conv3x3_winograd_weight_grad_nhwc(x, dout, 1)
               (per block: input and output-gradient transforms, 16 BLAS products Vᵀ @ Z)

and prints median milliseconds, GFLOP/s counted as for direct convolution,
2·N·Ho·Wo·F·C·9 (for Winograd an "effective" rate: it does 2.25× fewer
multiplications in its products), and direct / winograd (> 1: Winograd is
faster), and how far apart the two results are (max |difference| / max
|result|).  With several ``--threads`` the thread counts are interleaved
too (``numba.set_num_threads`` and threadpoolctl's BLAS limit, switched
before each timed call).  The machine has two cores: run it with nothing
else busy.
"""

import argparse
import time

import numpy as np

SHAPES = [  # (N, C, F, H = W): the first layer (3 -> 16), then the three stages
    (128, 3, 16, 32), (128, 16, 16, 32), (128, 32, 32, 16), (128, 64, 64, 8),
    (256, 3, 16, 32), (256, 16, 16, 32), (256, 32, 32, 16), (256, 64, 64, 8),
]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, nargs="+", default=[2])
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    parser.add_argument("--block-bytes", type=int, nargs="+", default=[None],
                        help="Winograd block budgets to compare (default: winograd.BLOCK_BYTES)")
    parser.add_argument("--batches", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--what", nargs="+", default=["forward"], choices=("forward", "weight-grad"))
    args = parser.parse_args(argv)

    import numba
    from threadpoolctl import ThreadpoolController

    from tqref.kernels import blas
    from tqref.kernels import conv_nhwc as kc
    from tqref.kernels import winograd as wg

    # "direct" is the row-column kernel: conv_forward_nhwc would otherwise hand
    # the layers with ≥ WINOGRAD_MIN_CHANNELS channels to Winograd itself
    kc.WINOGRAD_MIN_CHANNELS = None
    blas_ctl = ThreadpoolController()

    def use_threads(t):
        numba.set_num_threads(t)
        blas_ctl.limit(limits=t, user_api="blas")

    dtype = np.dtype(args.dtype)
    variants = [("direct", None)] + [("winograd" if b is None else f"winograd {b // 1024}K", b)
                                     for b in args.block_bytes]
    configs = [(t, name, b) for t in args.threads for name, b in variants]
    rng = np.random.default_rng(0)
    for what in args.what:
        print(f"\n{what}: {args.dtype}, threads {' and '.join(map(str, args.threads))}, padding 1, "
              f"median of {args.repeats} (interleaved, after warm-up); BLAS: {blas.BLAS}; "
              f"default Winograd block {wg.BLOCK_BYTES // 1024} KB")
        header = f"{'N':>4} {'C':>3}{'F':>3} {'HxW':>6} {'thr':>3} |" + "".join(
            f" {name:>16} ms  GF/s |" for name, _ in variants)
        print(header + "  direct/winograd  max rel diff")
        for N, C, F, HW in SHAPES:
            if N not in args.batches:
                continue
            x = rng.standard_normal((N, HW, HW, C)).astype(dtype)
            w = (rng.standard_normal((F, C, 3, 3)) / np.sqrt(9 * C)).astype(dtype)
            dout = rng.standard_normal((N, HW, HW, F)).astype(dtype)

            def run(name, b):
                if what == "forward":
                    if name == "direct":
                        return kc.conv_forward_nhwc(x, w, 1, 1)
                    return wg.conv3x3_winograd_nhwc(x, w, 1, block_bytes=b)
                if name == "direct":
                    return kc.conv_backward_nhwc(x, w, dout, 1, 1, need_dx=False)[1]
                return wg.conv3x3_winograd_weight_grad_nhwc(x, dout, 1, block_bytes=b)

            use_threads(args.threads[0])
            ref = run("direct", None)  # warm-up (JIT, scratch buffers) and the check
            diff = max(float(np.abs(run(name, b) - ref).max()) for name, b in variants[1:])
            diff /= float(np.abs(ref).max())
            for t, name, b in configs:  # warm-up of every configuration (scratch of each thread)
                use_threads(t)
                run(name, b)
            times = {(t, name): [] for t, name, _ in configs}
            for r in range(args.repeats):
                order = configs if r % 2 == 0 else configs[::-1]  # alternate who goes first
                for t, name, b in order:
                    use_threads(t)
                    t0 = time.perf_counter()
                    run(name, b)
                    times[t, name].append(time.perf_counter() - t0)
            flop = 2.0 * N * HW * HW * C * F * 9
            for t in args.threads:
                med = {name: float(np.median(times[t, name])) for name, _ in variants}
                cells = "".join(f" {1e3 * med[name]:16.2f}    {flop / med[name] / 1e9:4.0f} |"
                                for name, _ in variants)
                ratios = " ".join(f"{med['direct'] / med[name]:.2f}" for name, _ in variants[1:])
                print(f"{N:>4} {C:>3}{F:>3} {HW:>3}x{HW:<2} {t:>3} |{cells}  {ratios:>15}  {diff:.1e}")
        use_threads(max(args.threads))


if __name__ == "__main__":
    main()
