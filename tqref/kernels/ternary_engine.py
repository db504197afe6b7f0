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
phase-split batch (``phase_split``: the zero-padded images, for stride S > 1
their S·S sub-sampled phases, and the N images of a channel stacked row
after row, so that a window over the whole batch is one contiguous run
whatever the stride) and adds that run into an accumulator, four taps per
pass; the innermost loop runs over contiguous memory, which the compiler
vectorises (SIMD adds).  The run is cut into chunks of about CHUNK values
(an accumulator that stays in L1), and the work items (chunk, f) are split
over the threads in contiguous blocks (each item writes only its own rows
of out[:, f]: no two threads touch the same element, no atomics); batches
below ``PARALLEL_MIN_BATCH`` run on the calling thread.

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
             ordered by (f, g, block of input channels, sign: +1 first)
    bounds:  (F, G, B, 3) int64: (start, split, end) of each (f, g, b) run in ``taps``,
             b a block of ``channel_block`` input channels
    offsets: dict (C, Hq, Wq, stride) -> (planes, inplane), each (T,) int64: every tap's
             window in the phase-split input, its plane (phase, channel) and its origin
             inside the plane (``ternary_conv2d`` fills it: recomputing them costs ~0.2 ms
             per call for a 64×64 layer, a third of the layer's time at batch 1)
    """

    codes: np.ndarray
    scales: np.ndarray
    bias: np.ndarray
    taps: np.ndarray
    bounds: np.ndarray
    offsets: dict


def make_plan(codes, scales, bias, channel_block=None):
    """Index lists of the +1 and −1 codes per (output channel, group, block of
    input channels).

    codes: (G, F, C, HH, WW) integers in {−1, 0, +1};  scales: (G, F);  bias: (F,)
    channel_block: input channels per block (default ``CHANNEL_BLOCK``): the kernel
    adds one block's taps for every output channel before it moves to the next
    block, so the block's input lines stay in the L1 cache (see ``ternary_conv2d``).
    scales and bias keep their dtype (the activations' dtype, float32 or float64).
    """
    codes = np.asarray(codes)
    if codes.ndim != 5:
        raise ValueError(f"make_plan: codes: expected a 5-D array (G, F, C, HH, WW), got shape {codes.shape}")
    bad = (codes < -1) | (codes > 1)
    if np.any(bad):
        raise ValueError(f"make_plan: codes: expected values in {{-1, 0, 1}}, found {np.unique(codes[bad]).tolist()}")
    G, F, C, HH, WW = codes.shape
    scales, bias = np.asarray(scales), np.asarray(bias)
    if scales.shape != (G, F):
        raise ValueError(f"make_plan: scales: expected shape {(G, F)} (groups, output channels), got {scales.shape}")
    if bias.shape != (F,):
        raise ValueError(f"make_plan: bias: expected shape {(F,)}, got {bias.shape}")
    if bias.dtype != scales.dtype or bias.dtype not in (np.float32, np.float64):
        raise TypeError(f"make_plan: scales and bias: expected one float dtype, got {scales.dtype} and {bias.dtype}")
    block = CHANNEL_BLOCK if channel_block is None else channel_block
    if not (isinstance(block, (int, np.integer)) and block >= 1):
        raise ValueError(f"make_plan: channel_block: expected a positive integer, got {channel_block!r}")
    B = -(-C // block)
    flat = codes.reshape(G, F, -1).astype(np.int8)
    per_block = block * HH * WW  # flat kernel indices k = (c·HH + p)·WW + q: a block is one range of k
    taps, bounds, start = [], np.zeros((F, G, B, 3), dtype=np.int64), 0
    for f in range(F):
        for g in range(G):
            for b in range(B):
                k0 = b * per_block
                part = flat[g, f, k0:k0 + per_block]
                plus, minus = np.flatnonzero(part == 1) + k0, np.flatnonzero(part == -1) + k0
                bounds[f, g, b] = (start, start + plus.size, start + plus.size + minus.size)
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
def _add_taps(acc, xf, planes, inplane, plane_size, u0, lo, hi, sign, L):
    """acc[u] += sign · Σ_{t in lo:hi} xf[o_t + u0 + u] for u < L, o_t = planes[t]·plane_size
    + inplane[t] (tap t's window origin): four windows per pass, so acc is loaded
    and stored once per four adds."""
    t = lo
    while t + 4 <= hi:
        o1 = planes[t] * plane_size + inplane[t] + u0
        o2 = planes[t + 1] * plane_size + inplane[t + 1] + u0
        o3 = planes[t + 2] * plane_size + inplane[t + 2] + u0
        o4 = planes[t + 3] * plane_size + inplane[t + 3] + u0
        x1, x2, x3, x4 = xf[o1:o1 + L], xf[o2:o2 + L], xf[o3:o3 + L], xf[o4:o4 + L]
        if sign > 0:
            for u in range(L):  # contiguous: vectorised
                acc[u] += (x1[u] + x2[u]) + (x3[u] + x4[u])
        else:
            for u in range(L):
                acc[u] -= (x1[u] + x2[u]) + (x3[u] + x4[u])
        t += 4
    while t < hi:
        o1 = planes[t] * plane_size + inplane[t] + u0
        x1 = xf[o1:o1 + L]
        if sign > 0:
            for u in range(L):
                acc[u] += x1[u]
        else:
            for u in range(L):
                acc[u] -= x1[u]
        t += 1


@numba.njit(cache=True)
def _chunk(xf, chunk, rows, Hq, Wq, Ho, Wo, plane_size, planes, inplane, bounds, scales, bias, acc, relu,
           residual, residual_stride, residual_offset, has_residual, out):
    """out[n, :, i, :] for the stacked rows R = n·Hq + i of one chunk, R in
    [chunk·rows, (chunk + 1)·rows).

    acc (G, F, L): one accumulator run per group and output channel.  Block
    by block of input channels, every output channel adds the windows of its
    +1 codes and subtracts those of its −1 codes (the block's input lines are
    read from L1 by all F channels); then, per output channel, Σ_g s_g · acc_g,
    bias, shortcut and ReLU on the rows that are output pixels (i < Ho)."""
    F, G, B = bounds.shape[0], bounds.shape[1], bounds.shape[2]
    L = acc.shape[2]
    u0 = chunk * rows * Wq
    acc[:] = 0
    for b in range(B):
        for f in range(F):
            for g in range(G):
                start, split, end = bounds[f, g, b, 0], bounds[f, g, b, 1], bounds[f, g, b, 2]
                a = acc[g, f]
                _add_taps(a, xf, planes, inplane, plane_size, u0, start, split, 1, L)   # +1 codes: add
                _add_taps(a, xf, planes, inplane, plane_size, u0, split, end, -1, L)    # −1 codes: subtract
    N = out.shape[0]
    for f in range(F):
        for R in range(chunk * rows, min((chunk + 1) * rows, N * Hq)):
            n = R // Hq
            i = R - n * Hq
            if i >= Ho:
                continue  # a row of padding between two images: computed, thrown away
            r0 = (R - chunk * rows) * Wq
            orow = out[n, f, i]
            c = bias[f]
            for j in range(Wo):
                orow[j] = c
            for g in range(G):  # the only multiplications: one per output value and group
                s = scales[g, f]
                run = acc[g, f, r0:r0 + Wo]
                for j in range(Wo):
                    orow[j] += s * run[j]
            if has_residual:
                cr = f - residual_offset
                if 0 <= cr < residual.shape[1]:
                    rrow = residual[n, cr, i * residual_stride]
                    for j in range(Wo):
                        orow[j] += rrow[j * residual_stride]
            if relu:
                for j in range(Wo):
                    if orow[j] < 0:
                        orow[j] = 0


@numba.njit(cache=True)
def _work_range(lo, hi, xf, rows, Hq, Wq, Ho, Wo, plane_size, planes, inplane, bounds, scales, bias, L, relu,
                residual, residual_stride, residual_offset, has_residual, out):
    """Chunks lo..hi-1, with one accumulator block (G, F, L) reused from chunk to chunk."""
    acc = np.empty((bounds.shape[1], bounds.shape[0], L), dtype=xf.dtype)
    for k in range(lo, hi):
        _chunk(xf, k, rows, Hq, Wq, Ho, Wo, plane_size, planes, inplane, bounds, scales, bias, acc, relu,
               residual, residual_stride, residual_offset, has_residual, out)


@numba.njit(cache=True, parallel=True)
def _kernel_parallel(workers, xf, rows, chunks, Hq, Wq, Ho, Wo, plane_size, planes, inplane, bounds, scales,
                     bias, L, relu, residual, residual_stride, residual_offset, has_residual, out):
    """Every chunk, in ``workers`` contiguous blocks of chunks, one per thread
    (disjoint writes: a chunk writes only its own rows of out)."""
    for w in numba.prange(workers):
        _work_range(w * chunks // workers, (w + 1) * chunks // workers, xf, rows, Hq, Wq, Ho, Wo, plane_size,
                    planes, inplane, bounds, scales, bias, L, relu, residual, residual_stride,
                    residual_offset, has_residual, out)


# Below this many images a call runs on one thread.  Waking the Numba pool
# for a layer of a single image costs more than it saves on the shared
# 2-core machine (measured, batch 1 ResNet-20: 8 ms on one thread vs 18-20 ms
# on two while another process kept both cores busy).
PARALLEL_MIN_BATCH = 4
VECTOR = 16   # runs are rounded up to this many values (AVX-512 lanes of float32)
CHUNK = 256          # at most this many values per accumulator run (1 KB of float32)
CHANNEL_BLOCK = 8    # input channels per block of taps (``make_plan``)


def pitches(H, W, kernel, stride, padding):
    """(Hq, Wq): rows per image and values per row of a phase plane (``phase_split``).

    Stride S > 1: Hq = ⌈(H + 2P)/S⌉, Wq = ⌈(W + 2P)/S⌉, each image with its own padding.
    Stride 1 with P ≤ kernel − 1 (the usual 3×3 with P = 1, 1×1 with P = 0):
    Hq = H + P, Wq = W + P, neighbours *share* their padding: the P zero rows
    under an image are the P zero rows over the next one, and the P zero
    columns right of a row are the P zero columns left of the next row (the
    flat layout continues there), so fewer values are computed and thrown away.
    """
    HH, WW = kernel
    if stride == 1 and padding <= HH - 1 and padding <= WW - 1:
        return H + padding, W + padding
    return -(-(H + 2 * padding) // stride), -(-(W + 2 * padding) // stride)


def phase_split(x, stride, padding, kernel, tail=VECTOR):
    """The zero-padded batch rearranged so that every tap's window, over all
    the images at once, is one contiguous run.

    x (N, C, H, W) -> xq flat, of size S·S·C·N·Hq·Wq + ``tail``, with (Hq, Wq)
    from ``pitches``: S·S phases, phase (a, b) holding x_pad[:, :, a::S, b::S],
    and in each phase C planes of N·Hq rows of Wq, the N images of one
    channel stacked row after row:

        x_pad[n, c, i·S + p, j·S + q] = xq at ((p % S)·S + q % S, c, n·Hq + i + p // S, j + q // S)

    so, for a fixed tap (c, p, q), output pixel (n, i, j) reads element
    n·Hq·Wq + (i + p//S)·Wq + j + q//S of one plane: consecutive pixels are
    consecutive elements, rows Wq apart, images Hq·Wq apart.  Stride 1: one
    phase, the padded images, with shared padding (a window that runs past
    an image's last row or column reads the next one's zeros, or the next
    plane's, or the ``tail``).  The ``tail`` zeros at the end let the last
    run be rounded up.  Returns (xq, Hq, Wq).
    """
    N, C, H, W = x.shape
    S, P = stride, padding
    Hq, Wq = pitches(H, W, kernel, S, P)
    size = S * S * C * N * Hq * Wq
    xq = np.zeros(size + tail, dtype=x.dtype)
    planes = xq[:size].reshape(S, S, C, N, Hq, Wq)
    by_channel = x.transpose(1, 0, 2, 3)  # (C, N, H, W): a plane per channel
    if S == 1:
        planes[0, 0, :, :, P:P + H, P:P + W] = by_channel
    else:
        xp = np.zeros((C, N, H + 2 * P, W + 2 * P), dtype=x.dtype)
        xp[:, :, P:P + H, P:P + W] = by_channel
        for a in range(S):
            for b in range(S):
                sub = xp[:, :, a::S, b::S]
                planes[a, b, :, :, :sub.shape[2], :sub.shape[3]] = sub
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

    The blocking: the batch is phase-split (``phase_split``) so that, whatever
    the stride, a tap's window over all N images is one run of the stacked
    rows.  That run is cut into equal chunks of at most ⌊CHUNK / Wq⌋ rows; one
    work item is one chunk and one output channel: its accumulator (L ≈ CHUNK
    values, in L1) receives the windows of the channel's +1 codes and loses
    those of its −1 codes, four windows per pass, and is scaled once.  The
    items of one chunk follow each other on one thread, so the chunk's input
    lines (C·L values) are read from the cache by every output channel.  The
    columns Wq − W_out at the end of each row and the rows Hq − H_out between
    images are computed and thrown away: Hq·Wq / (H_out·W_out) − 1 extra adds,
    6 % at 32×32, 13 % at 16×16 and 27 % at 8×8 for a 3×3 stride-1 layer with
    shared padding (``pitches``), not counted in ``plan_operation_counts``,
    which counts the convolution's adds.
    """
    N, F, Ho, Wo = _check_call(x, plan, stride, padding, residual, residual_stride, residual_offset,
                               "ternary_conv2d")
    _, _, C, HH, WW = plan.codes.shape
    S = int(stride)
    Hq, Wq = pitches(x.shape[2], x.shape[3], (HH, WW), S, int(padding))
    chunks = -(-(N * Hq) // max(1, CHUNK // Wq))
    rows = -(-(N * Hq) // chunks)  # evened out: the last chunk is not a sliver
    L = -(-(rows * Wq) // VECTOR) * VECTOR
    # the last chunk's run reaches L values past its start, the windows (HH, WW) further
    xq, _, _ = phase_split(np.ascontiguousarray(x), S, int(padding), (HH, WW), tail=L + (HH // S + 1) * Wq + VECTOR)
    where = plan.offsets.get((C, Hq, Wq, S))
    if where is None:
        c, pq = np.divmod(plan.taps.astype(np.int64), HH * WW)
        p, q = np.divmod(pq, WW)
        # each tap's window: its plane (phase, channel), and its origin inside the plane
        where = ((p % S) * S + q % S) * C + c, (p // S) * Wq + q // S
        plan.offsets[(C, Hq, Wq, S)] = where
    planes, inplane = where
    out = np.empty((N, F, Ho, Wo), dtype=x.dtype)
    res = np.zeros((1, 1, 1, 1), dtype=x.dtype) if residual is None else np.ascontiguousarray(residual)
    args = (xq, rows, Hq, Wq, Ho, Wo, N * Hq * Wq, planes, inplane, plan.bounds, plan.scales, plan.bias, L,
            bool(relu), res, int(residual_stride), int(residual_offset), residual is not None, out)
    if N >= PARALLEL_MIN_BATCH:
        workers = min(numba.get_num_threads(), chunks)
        _kernel_parallel(workers, xq, rows, chunks, *args[2:])
    else:
        _work_range(0, chunks, *args)
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
    scaled = int(np.count_nonzero(np.any(plan.bounds[..., 2] > plan.bounds[..., 0], axis=2)))
    return {"adds": nonzero * positions, "skipped": zeros * positions,
            "multiplies": scaled * positions, "epilogue_adds": scaled * positions}
