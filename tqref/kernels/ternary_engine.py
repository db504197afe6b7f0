"""Add-only ternary convolution for inference: the kernel behind ``tqref.deploy``.

A folded ternary layer (``tqref.deploy.fold``) computes, for G groups of
codes T_g ∈ {−1, 0, +1} with per-output-channel scales s_g, a bias c and an
optional residual r:

    out[n, f] = act( Σ_g s_g[f] · A_g[n, f] + c[f] + r[n, f] )
    A_g[n, f, i, j] = Σ_{(c,p,q): T_g[f,c,p,q] = +1} x_pad[n, c, i·S + p, j·S + q]
                    − Σ_{(c,p,q): T_g[f,c,p,q] = −1} x_pad[n, c, i·S + p, j·S + q]

A_g uses additions and subtractions only; zero codes cost nothing; each
output value is multiplied once per group by s_g[f].  act is ReLU or the
identity.  The residual is the CIFAR ResNet's shortcut: identity
(r = res), or option A (r[n, f, i, j] = res[n, f − offset, 2i, 2j], zero
outside the input's channels).

The plan (``make_plan``)
------------------------
For each output channel f and group g, the positions of its +1 codes and of
its −1 codes, as flat kernel indices k = (c·HH + p)·WW + q, in one array
``taps``; ``bounds[f, g] = (start, split, end)`` cuts it:

    taps[start:split]   positions of +1      taps[split:end]   positions of −1

The fast kernel turns each tap into the offset of its window in the
phase-split input (``phase_split``: the zero-padded image, and for stride
S > 1 its S·S sub-sampled phases, so that every window is one contiguous
run whatever the stride) and adds that run into an accumulator, four taps
per pass; the innermost loop runs over contiguous memory, which the
compiler vectorises (SIMD adds).  Work is split over (n, f) pairs with
``prange`` (each iteration writes only out[n, f]: no two threads touch the
same element, no atomics); batches below ``PARALLEL_MIN_BATCH`` run on the
calling thread.

Functions (fast and naive twins have the same signature)
---------
make_plan(codes, scales, bias)                                  -> TernaryConvPlan
ternary_conv2d(x, plan, stride, padding, relu=False, residual=None, residual_stride=1,
               residual_offset=0)                               -> out (N, F, H_out, W_out)
ternary_conv2d_naive(...)    dense NumPy twin: windows · decoded codes (einsum), then the same epilogue
plan_operation_counts(plan, out_hw)                             -> adds, skipped, multiplies per image
"""

from typing import NamedTuple

import numba
import numpy as np


class TernaryConvPlan(NamedTuple):
    """What a kernel call needs about one folded ternary layer.

    codes:   (G, F, C, HH, WW) int8 in {−1, 0, +1}: the group codes (the naive twin reads these)
    scales:  (G, F) float: s_g per output channel
    bias:    (F,) float: c
    taps:    (T,) int32: flat kernel indices k = (c·HH + p)·WW + q of the non-zero codes,
             ordered by (f, g, sign: +1 first)
    bounds:  (F, G, 3) int64: (start, split, end) of each (f, g) run in ``taps``
    offsets: dict (C, Hq, Wq, stride) -> the taps' window origins in the phase-split
             input (``ternary_conv2d`` fills it: recomputing them costs ~0.2 ms per
             call for a 64×64 layer, a third of the layer's time at batch 1)
    """

    codes: np.ndarray
    scales: np.ndarray
    bias: np.ndarray
    taps: np.ndarray
    bounds: np.ndarray
    offsets: dict


def make_plan(codes, scales, bias):
    """Index lists of the +1 and −1 codes per (output channel, group).

    codes: (G, F, C, HH, WW) integers in {−1, 0, +1};  scales: (G, F);  bias: (F,)
    scales and bias keep their dtype (the activations' dtype, float32 or float64).
    """
    codes = np.asarray(codes)
    if codes.ndim != 5:
        raise ValueError(f"make_plan: codes: expected a 5-D array (G, F, C, HH, WW), got shape {codes.shape}")
    bad = (codes < -1) | (codes > 1)
    if np.any(bad):
        raise ValueError(f"make_plan: codes: expected values in {{-1, 0, 1}}, found {np.unique(codes[bad]).tolist()}")
    G, F = codes.shape[:2]
    scales, bias = np.asarray(scales), np.asarray(bias)
    if scales.shape != (G, F):
        raise ValueError(f"make_plan: scales: expected shape {(G, F)} (groups, output channels), got {scales.shape}")
    if bias.shape != (F,):
        raise ValueError(f"make_plan: bias: expected shape {(F,)}, got {bias.shape}")
    if bias.dtype != scales.dtype or bias.dtype not in (np.float32, np.float64):
        raise TypeError(f"make_plan: scales and bias: expected one float dtype, got {scales.dtype} and {bias.dtype}")
    flat = codes.reshape(G, F, -1).astype(np.int8)
    taps, bounds, start = [], np.zeros((F, G, 3), dtype=np.int64), 0
    for f in range(F):
        for g in range(G):
            plus = np.flatnonzero(flat[g, f] == 1)
            minus = np.flatnonzero(flat[g, f] == -1)
            bounds[f, g] = (start, start + plus.size, start + plus.size + minus.size)
            taps += [plus, minus]
            start += plus.size + minus.size
    taps = np.concatenate(taps).astype(np.int32) if taps else np.zeros(0, np.int32)
    return TernaryConvPlan(codes.astype(np.int8), scales, bias, taps, bounds, {})


def _check_call(x, plan, stride, padding, residual, residual_stride, residual_offset, who):
    if not isinstance(plan, TernaryConvPlan):
        raise TypeError(f"{who}: plan: expected a TernaryConvPlan (make_plan), got {type(plan).__name__}")
    if not isinstance(x, np.ndarray) or x.ndim != 4:
        raise ValueError(f"{who}: x: expected a 4-D array (N, C, H, W), got "
                         f"{getattr(x, 'shape', type(x).__name__)}")
    G, F, C, HH, WW = plan.codes.shape
    if x.shape[1] != C:
        raise ValueError(f"{who}: x: expected {C} channels on axis 1 (the plan's codes {plan.codes.shape}), "
                         f"got shape {x.shape}")
    if x.dtype != plan.bias.dtype:
        raise TypeError(f"{who}: x: expected dtype {plan.bias.dtype} (the plan's scales), got {x.dtype}")
    if stride < 1 or padding < 0:
        raise ValueError(f"{who}: stride, padding: expected stride ≥ 1 and padding ≥ 0, got {stride}, {padding}")
    N, _, H, W = x.shape
    Ho, Wo = (H + 2 * padding - HH) // stride + 1, (W + 2 * padding - WW) // stride + 1
    if Ho < 1 or Wo < 1:
        raise ValueError(f"{who}: kernel ({HH}, {WW}) does not fit the padded input "
                         f"({H + 2 * padding}, {W + 2 * padding}) of x {x.shape}")
    if residual is not None:
        if residual.ndim != 4 or residual.dtype != x.dtype or residual.shape[0] != N:
            raise ValueError(f"{who}: residual: expected a 4-D {x.dtype} array with {N} images, got "
                             f"{residual.dtype} {residual.shape}")
        rs = residual_stride
        rh, rw = (residual.shape[2] + rs - 1) // rs, (residual.shape[3] + rs - 1) // rs
        if (rh, rw) != (Ho, Wo) or residual_offset < 0 or residual_offset + residual.shape[1] > F:
            raise ValueError(f"{who}: residual: expected {residual_offset} + C_r ≤ {F} channels and "
                             f"({Ho}, {Wo}) pixels after stride {rs}, got shape {residual.shape}")
    return N, F, Ho, Wo


# ---------------------------------------------------------------- naive twin
def _epilogue_naive(acc, plan, relu, residual, residual_stride, residual_offset):
    out = acc + plan.bias[None, :, None, None]
    if residual is not None:
        rs = residual_stride
        sub = residual[:, :, ::rs, ::rs]
        out[:, residual_offset:residual_offset + sub.shape[1]] += sub
    return np.maximum(out, 0) if relu else out


def ternary_conv2d_naive(x, plan, stride, padding, relu=False, residual=None, residual_stride=1,
                         residual_offset=0):
    """Dense twin of ``ternary_conv2d``: every window times the decoded codes.

        out = act( Σ_g s_g ⊙ einsum(windows(x_pad), T_g) + c + shortcut(residual) )

    x: (N, C, H, W) -> (N, F, H_out, W_out); arguments as ``ternary_conv2d``.
    """
    N, F, Ho, Wo = _check_call(x, plan, stride, padding, residual, residual_stride, residual_offset,
                               "ternary_conv2d_naive")
    G, _, C, HH, WW = plan.codes.shape
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    windows = np.lib.stride_tricks.sliding_window_view(xp, (HH, WW), axis=(2, 3))
    windows = windows[:, :, ::stride, ::stride][:, :, :Ho, :Wo]  # (N, C, Ho, Wo, HH, WW)
    acc = np.zeros((N, F, Ho, Wo), dtype=x.dtype)
    for g in range(G):
        conv = np.einsum("nchwpq,fcpq->nfhw", windows, plan.codes[g].astype(x.dtype), optimize=True)
        acc += plan.scales[g][None, :, None, None] * conv
    return _epilogue_naive(acc, plan, relu, residual, residual_stride, residual_offset)


# ---------------------------------------------------------------- fast kernel
# The inner loops index *views* (xf[o:o + L]) with the loop counter, never
# xf[o + u]: Numba wraps negative indices around, and with an index it cannot
# prove non-negative it emits a test per element that stops LLVM from
# vectorising the loop (measured 1.7 -> 26 Gadd/s on one core).

@numba.njit(cache=True, inline="always")
def _add_taps(acc, xf, offsets, lo, hi, sign, L):
    """acc[u] += sign · Σ_{t in lo:hi} xf[offsets[t] + u] for u < L (stride 1):
    four windows per pass, so acc is loaded and stored once per four adds."""
    t = lo
    while t + 4 <= hi:
        x1 = xf[offsets[t]:offsets[t] + L]
        x2 = xf[offsets[t + 1]:offsets[t + 1] + L]
        x3 = xf[offsets[t + 2]:offsets[t + 2] + L]
        x4 = xf[offsets[t + 3]:offsets[t + 3] + L]
        if sign > 0:
            for u in range(L):  # contiguous: vectorised
                acc[u] += (x1[u] + x2[u]) + (x3[u] + x4[u])
        else:
            for u in range(L):
                acc[u] -= (x1[u] + x2[u]) + (x3[u] + x4[u])
        t += 4
    while t < hi:
        x1 = xf[offsets[t]:offsets[t] + L]
        if sign > 0:
            for u in range(L):
                acc[u] += x1[u]
        else:
            for u in range(L):
                acc[u] -= x1[u]
        t += 1


@numba.njit(cache=True)
def _one_output(xf, o, acc, offsets, bounds, scales, bias, f, n, pitch, L, relu, residual, residual_stride,
                residual_offset, has_residual):
    """o = out[n, f] (Ho, Wo) from the phase-split image xf = xq[n] (flat)."""
    Ho, Wo = o.shape
    # the epilogue's additive terms first: bias, then the shortcut
    for i in range(Ho):
        for j in range(Wo):
            o[i, j] = bias[f]
    if has_residual:
        cr = f - residual_offset
        if 0 <= cr < residual.shape[1]:
            for i in range(Ho):
                for j in range(Wo):
                    o[i, j] += residual[n, cr, i * residual_stride, j * residual_stride]
    for g in range(scales.shape[0]):
        start, split, end = bounds[f, g, 0], bounds[f, g, 1], bounds[f, g, 2]
        if start == end:
            continue  # an all-zero filter: nothing to add, nothing to scale
        acc[:] = 0
        _add_taps(acc, xf, offsets, start, split, 1, L)   # +1 codes: add
        _add_taps(acc, xf, offsets, split, end, -1, L)    # −1 codes: subtract
        s = scales[g, f]
        for i in range(Ho):  # the only multiplications: one per output value and group
            ar = acc[i * pitch:i * pitch + Wo]
            orow = o[i]
            for j in range(Wo):
                orow[j] += s * ar[j]
    if relu:
        for i in range(Ho):
            for j in range(Wo):
                if o[i, j] < 0:
                    o[i, j] = 0


@numba.njit(cache=True, parallel=True)
def _kernel_parallel(xq, offsets, bounds, scales, bias, pitch, L, relu, residual, residual_stride,
                     residual_offset, has_residual, out):
    """Every out[n, f], the (n, f) pairs split over the threads (disjoint writes)."""
    N, F = out.shape[0], out.shape[1]
    for nf in numba.prange(N * F):
        n, f = nf // F, nf % F
        acc = np.empty(L, dtype=xq.dtype)  # private to the iteration
        _one_output(xq[n], out[n, f], acc, offsets, bounds, scales, bias, f, n, pitch, L, relu, residual,
                    residual_stride, residual_offset, has_residual)


@numba.njit(cache=True)
def _kernel_serial(xq, offsets, bounds, scales, bias, pitch, L, relu, residual, residual_stride,
                   residual_offset, has_residual, out):
    """The same loop on the calling thread (small batches: see ``PARALLEL_MIN_BATCH``)."""
    N, F = out.shape[0], out.shape[1]
    acc = np.empty(L, dtype=xq.dtype)
    for nf in range(N * F):
        n, f = nf // F, nf % F
        _one_output(xq[n], out[n, f], acc, offsets, bounds, scales, bias, f, n, pitch, L, relu, residual,
                    residual_stride, residual_offset, has_residual)


# Below this many images a call runs on one thread.  Waking Numba's pool
# (its threads sleep between loops: OMP_WAIT_POLICY=PASSIVE, set in
# tqref.kernels) for a layer of a single image costs more than it saves:
# on the idle 2-core machine two threads ran a batch-1 ResNet-20 forward at
# 0.71x the speed of one, and at 18-20 ms against 8 ms while another process
# kept both cores busy
# (benchmarks/notes/ternary_engine_roofline.md).
PARALLEL_MIN_BATCH = 4
VECTOR = 16  # accumulator runs are rounded up to this many values (AVX-512 lanes of float32)


def phase_split(x, stride, padding):
    """The zero-padded input rearranged so that every tap's window is one contiguous run.

    x (N, C, H, W) -> xq (N, S·S·C·Hq·Wq + VECTOR), flat per image, with
    Hq = ⌈(H + 2P)/S⌉, Wq = ⌈(W + 2P)/S⌉, phase (a, b) holding x_pad[:, :, a::S, b::S]:

        x_pad[n, c, i·S + p, j·S + q] = xq[n] at ((p % S)·S + q % S, c, i + p // S, j + q // S)

    so, for a fixed tap (c, p, q), output pixel (i, j) reads element
    (i + p//S, j + q//S) of one phase plane: consecutive pixels are
    consecutive elements, rows Wq apart.  Stride 1: one phase, the padded
    image.  The VECTOR zeros at the end let the last run be rounded up.
    Returns (xq, Hq, Wq).
    """
    N, C, H, W = x.shape
    S, P = stride, padding
    Hp, Wp = H + 2 * P, W + 2 * P
    Hq, Wq = -(-Hp // S), -(-Wp // S)
    size = S * S * C * Hq * Wq
    xq = np.zeros((N, size + VECTOR), dtype=x.dtype)
    planes = xq[:, :size].reshape(N, S, S, C, Hq, Wq)
    for a in range(S):        # stride 1: one phase, the padded image
        h0 = (a - P) % S      # the first input row of phase a: (h0 + P) % S == a
        for b in range(S):
            w0 = (b - P) % S
            sub = x[:, :, h0::S, w0::S]  # straight from x: no padded copy in between
            i0, j0 = (h0 + P) // S, (w0 + P) // S
            planes[:, a, b, :, i0:i0 + sub.shape[2], j0:j0 + sub.shape[3]] = sub
    return xq, Hq, Wq


def ternary_conv2d(x, plan, stride, padding, relu=False, residual=None, residual_stride=1, residual_offset=0):
    """Folded ternary convolution with additions only inside the loops.

        out = act( Σ_g s_g ⊙ conv(x, T_g) + c + shortcut(residual) )

    x:          (N, C, H, W) float32 or float64 (the plan's dtype)
    plan:       ``make_plan(codes (G, F, C, HH, WW), scales (G, F), bias (F,))``
    stride, padding: of the convolution
    relu:       apply max(·, 0) at the end
    residual:   None, or (N, C_r, H_r, W_r) added as res[:, f − residual_offset, ::residual_stride,
                ::residual_stride] (identity: stride 1, offset 0; option A: stride 2, offset (F − C_r)//2)
    Returns out (N, F, H_out, W_out).

    The input is phase-split (``phase_split``) so that, whatever the stride,
    every tap adds one contiguous run of L = (H_out − 1)·Wq + W_out values,
    rounded up to a multiple of VECTOR so the vector loop has no scalar tail;
    the extra values and the Wq − W_out columns between rows are computed
    and thrown away (about 6 % extra adds at 32×32, 25 % at 8×8, not counted
    in ``plan_operation_counts``, which counts the convolution's adds).
    """
    N, F, Ho, Wo = _check_call(x, plan, stride, padding, residual, residual_stride, residual_offset,
                               "ternary_conv2d")
    _, _, C, HH, WW = plan.codes.shape
    S = int(stride)
    xq, Hq, Wq = phase_split(np.ascontiguousarray(x), S, int(padding))
    L = -(-((Ho - 1) * Wq + Wo) // VECTOR) * VECTOR
    offsets = plan.offsets.get((C, Hq, Wq, S))
    if offsets is None:
        c, pq = np.divmod(plan.taps.astype(np.int64), HH * WW)
        p, q = np.divmod(pq, WW)
        # each tap's window origin in xq[n]: phase, channel, then row and column inside the phase plane
        offsets = (((p % S) * S + q % S) * C + c) * (Hq * Wq) + (p // S) * Wq + q // S
        plan.offsets[(C, Hq, Wq, S)] = offsets
    out = np.empty((N, F, Ho, Wo), dtype=x.dtype)
    res = np.zeros((1, 1, 1, 1), dtype=x.dtype) if residual is None else np.ascontiguousarray(residual)
    kernel = _kernel_parallel if N >= PARALLEL_MIN_BATCH else _kernel_serial
    kernel(xq, offsets, plan.bounds, plan.scales, plan.bias, Wq, L, bool(relu), res, int(residual_stride),
           int(residual_offset), residual is not None, out)
    return out


def plan_operation_counts(plan, out_hw):
    """Operations per image of one ``ternary_conv2d`` call with output (H_out, W_out):

        adds        Σ_{g,f} nnz(T_g[f]) · H_out·W_out    (one add or subtract per non-zero code)
        skipped     Σ_{f} #{positions where every group's code is 0} · H_out·W_out
        multiplies  #{(g, f) with a non-zero code} · H_out·W_out   (s_g[f] times the group's sum;
                    at most G·F·H_out·W_out, an all-zero group is skipped by the kernel)
        epilogue_adds  as multiplies                      (adding each scaled group onto the output)
    Bias and residual adds are counted by the caller.
    """
    G, F = plan.codes.shape[:2]
    positions = int(out_hw[0]) * int(out_hw[1])
    nonzero = int(np.count_nonzero(plan.codes))
    zeros = int(np.sum(np.all(plan.codes == 0, axis=0)))
    scaled = int(np.count_nonzero(plan.bounds[:, :, 2] > plan.bounds[:, :, 0]))
    return {"adds": nonzero * positions, "skipped": zeros * positions,
            "multiplies": scaled * positions, "epilogue_adds": scaled * positions}
