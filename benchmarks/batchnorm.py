"""Fused batch norm + residual add + ReLU, forward and backward, with and
without folding the rows (``tqref.kernels.ops.FOLD_WIDTH``).

    python benchmarks/batchnorm.py                 # 1 and 2 threads, ResNet-20 shapes, batch 128

For each stage of a CIFAR ResNet (16 channels at 32×32, 32 at 16×16, 64 at
8×8) it times ``batchnorm_relu_forward`` (training mode, with a residual)
and ``batchnorm_relu_backward`` for FOLD_WIDTH = 1 (one pixel per kernel
row, the inner loop runs over C) and the default, taking turns repeat by
repeat, and prints the medians.
"""

import argparse
import time

import numpy as np


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args(argv)

    import numba
    from threadpoolctl import threadpool_limits

    from tqref.kernels import ops as fb
    from tqref.kernels.layout import to_nchw
    from tqref.kernels.ops import batchnorm_relu_backward, batchnorm_relu_forward

    widths = (1, fb.FOLD_WIDTH)
    rng = np.random.default_rng(0)
    print(f"batch {args.batch}, float32, median of {args.repeats}, FOLD_WIDTH {widths[0]} vs {widths[1]}")
    for threads in args.threads:
        numba.set_num_threads(threads)
        with threadpool_limits(threads):
            for C, S in ((16, 32), (32, 16), (64, 8)):
                def nchw():
                    return to_nchw(rng.standard_normal((args.batch, S, S, C)).astype(np.float32))
                x, res, dout = nchw(), nchw(), nchw()
                g, b = np.ones(C, np.float32), np.zeros(C, np.float32)
                rm, rv = np.zeros(C, np.float32), np.ones(C, np.float32)
                times = {w: [] for w in widths}
                for rep in range(args.repeats + 2):  # the first two: warm-up
                    for w in widths:
                        fb.FOLD_WIDTH = w
                        t0 = time.perf_counter()
                        out, cache = batchnorm_relu_forward(x, g, b, rm, rv, True, residual=res)
                        t1 = time.perf_counter()
                        batchnorm_relu_backward(dout, cache)
                        t2 = time.perf_counter()
                        if rep >= 2:
                            times[w].append((t1 - t0, t2 - t1))
                fb.FOLD_WIDTH = widths[1]
                cells = []
                for w in widths:
                    fwd, bwd = np.median(np.array(times[w]), axis=0) * 1e3
                    cells.append(f"fold {w:2d}: forward {fwd:5.2f} ms, backward {bwd:5.2f} ms")
                print(f"{threads} thread(s), C = {C:2d} at {S}×{S}:  " + "  |  ".join(cells))


if __name__ == "__main__":
    main()
