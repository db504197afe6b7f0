"""Winograd F(2×2, 3×3) convolution on channels-last (NHWC) arrays (Lavin & Gray 2016).

What it computes.  A 3×3, stride-1 convolution.  Each 2×2 block of outputs
comes from the 4×4 block of (padded) input under it; computed directly that
is 4 · 9 = 36 multiplications per channel pair (c, f), Winograd's minimal
filtering algorithm needs 16: it moves the input tile d (4×4) and the
kernel g (3×3) into a space where convolution becomes an element-wise
product, then moves the product back:

    Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A                       Y: 2×2, one (c, f) pair

and, summed over the input channels c (the transforms are linear, so the
sum moves inside Aᵀ[·]A):

    U[ξ, ν, c, f] = (G g_fc Gᵀ)[ξ, ν]                      weights, once per call
    V[ξ, ν, t, c] = (Bᵀ d_tc B)[ξ, ν]                      input tile t, channel c
    M[ξ, ν, t, f] = Σ_c V[ξ, ν, t, c] · U[ξ, ν, c, f]      16 matrix products (T × C) @ (C × F)
    Y_tf          = Aᵀ M[:, :, t, f] A                     the 2×2 outputs of tile t

with the constant matrices (module constants ``B``, ``G``, ``A``)

         ⎡ 1  0 −1  0⎤          ⎡ 1    0    0 ⎤          ⎡ 1  1  1  0⎤
    Bᵀ = ⎢ 0  1  1  0⎥      G = ⎢ ½    ½    ½ ⎥     Aᵀ = ⎣ 0  1 −1 −1⎦
         ⎢ 0 −1  1  0⎥          ⎢ ½   −½    ½ ⎥
         ⎣ 0  1  0 −1⎦          ⎣ 0    0    1 ⎦

Tile t = (n, ty, tx) reads padded rows 2·ty … 2·ty + 3 and columns
2·tx … 2·tx + 3 and writes outputs (2·ty + i, 2·tx + j), i, j ∈ {0, 1}:
neighbouring tiles overlap by two rows/columns.  When H_out or W_out is odd
the last tile sticks out by one: its input is read as zeros past the
padded image and its extra outputs are dropped.

The weight gradient.  The convolution is linear in each kernel g_fc; its
adjoint with respect to g, which backpropagation needs, runs the same
algorithm backwards, with the transposed matrices:

    forward    Y_t      = Aᵀ [ Σ_c (G g_fc Gᵀ) ⊙ V_tc ] A,     V_tc = Bᵀ d_tc B
    gradient   ∂L/∂g_fc = Gᵀ [ Σ_t V_tc ⊙ Z_tf ] G,            Z_tf = A δ_tf Aᵀ

with δ_tf = ∂L/∂Y_tf, the 2×2 output gradients of tile t (zero past an odd
H_out or W_out: those outputs do not exist).  Summed over all T tiles of
the batch, that is 16 matrix products and one small transform:

    M[ξ, ν] = Σ_t V[ξ, ν, t, :]ᵀ Z[ξ, ν, t, :]      (C × T) @ (T × F) -> C × F
    dW[f, c] = Gᵀ M[:, :, c, f] G

Cost.  The products do 16·C·F multiply-adds per tile of 4 outputs instead
of 36·C·F (2.25× fewer).  The transforms are additions only, but V is 4×
the input and M 4× the output, and both pass through the cache: Winograd
pays only with enough channels, so ``conv_nhwc`` sends it the 3×3 stride-1
convolutions with at least ``conv_nhwc.WINOGRAD_MIN_CHANNELS`` (16) input
and output channels (the comment there says why 16).  The intermediate
values are larger than the result, so float32 rounding errors are somewhat
larger than direct convolution's (``tests/test_winograd.py`` bounds them).

The fast version.  Each thread takes a slice of the batch
(``parallel.parallel_for``) and walks it, in one Numba call, in blocks of
nb images whose V and M (or V and Z) fit ``BLOCK_BYTES`` (half a core's L2):

    forward           1. split columns: X[n, hp, parity, q, :] = x_pad[n, hp, 2q + parity, :]
                      2. input transform -> V (16, T, C)
                      3. 16 products M_k = V_k @ U_k (BLAS ``blas.gemm``; U made once per call)
                      4. output transform, tile row by tile row, stored into out (NHWC)
    weight gradient   1–2 as above; 3. split dout's columns; 4. output-gradient
                      transform -> Z (16, T, F); 5. 16 products M_k += V_kᵀ Z_k (BLAS, β = 1)
                      into the thread's own M; then the threads' M are added (float64)
                      and transformed once, dW = Gᵀ M G

Optimisations (measurements behind them, historical, 2-core machine:
benchmarks/notes/conv_kernels.md):

  - blocks of images sized to the cache (above), the 16 products in BLAS
  - the column split (step 1) makes one column of every tile of a tile row
    one contiguous run: the transforms are long loops over runs, which
    vectorise, not 16 short loops per tile; the input and output-gradient
    transforms write 4 results per loop
  - the output transform adds and subtracts (Aᵀ as an index table)
    instead of multiplying by ±1
  - the weight transforms (U, and dW = Gᵀ M G) in float64 Numba, one
    input channel at a time

    conv3x3_winograd_nhwc(x, w, padding)        -> out (N, H_out, W_out, F)
    conv3x3_winograd_nhwc_naive(x, w, padding)  the same, NumPy, tile by tile
    conv3x3_winograd_weight_grad_nhwc(x, dout, padding)   -> dw (F, C, 3, 3)
    conv3x3_winograd_weight_grad_nhwc_naive(x, dout, padding)   the same, NumPy, tile by tile
    winograd_weights(w, dtype)                  -> U (16, C, F)
    B, G, A                                     the transform matrices
"""

import numba
import numpy as np

from tqref.kernels.blas import gemm
from tqref.kernels.parallel import num_threads, parallel_for, scratch

BT = np.array([[1, 0, -1, 0],
               [0, 1, 1, 0],
               [0, -1, 1, 0],
               [0, 1, 0, -1]], dtype=np.float64)
B = BT.T.copy()                                          # (4, 4): input transform, V = Bᵀ d B
G = np.array([[1.0, 0.0, 0.0],
              [0.5, 0.5, 0.5],
              [0.5, -0.5, 0.5],
              [0.0, 0.0, 1.0]])                          # (4, 3): kernel transform, U = G g Gᵀ
AT = np.array([[1, 1, 1, 0],
               [0, 1, -1, -1]], dtype=np.float64)
A = AT.T.copy()                                          # (4, 2): output transform, Y = Aᵀ M A

# Budget for one block's V and M (bytes): half the 1 MB L2 of a Zen 4 core.
# Measured (benchmarks/winograd.py --block-bytes, ResNet-20 shapes): 128 KB
# to 1 MB ran within 2 % of each other, 2 MB up to 15 % slower (64 channels).
# A block is at least one image (16 channels at 32×32: 512 KB).
BLOCK_BYTES = 512 * 1024


def _check(x, w, padding):
    if x.ndim != 4 or w.ndim != 4 or w.shape[2:] != (3, 3) or w.shape[1] != x.shape[3]:
        raise ValueError(f"winograd: need x (N, H, W, C) and w (F, C, 3, 3), got {x.shape} and {w.shape}")
    return _check_input(x, padding)


def _check_input(x, padding):
    """dtype, padding and size of x (N, H, W, C); returns (H_out, W_out)."""
    if x.dtype not in (np.float32, np.float64):
        raise TypeError(f"winograd: x must be float32 or float64, got {x.dtype}")
    if padding not in (0, 1, 2):
        raise ValueError(f"winograd: padding must be 0, 1 or 2, got {padding}")
    Ho, Wo = x.shape[1] + 2 * padding - 2, x.shape[2] + 2 * padding - 2
    if Ho < 1 or Wo < 1:
        raise ValueError(f"winograd: 3×3 kernel larger than the padded input {x.shape}, padding {padding}")
    return Ho, Wo


def _check_grad(x, dout, padding):
    """x (N, H, W, C) and dout (N, H_out, W_out, F) of a 3×3 stride-1 convolution; returns (H_out, W_out)."""
    if x.ndim != 4 or dout.ndim != 4:
        raise ValueError(f"winograd: need x (N, H, W, C) and dout (N, H_out, W_out, F), got {x.shape} and {dout.shape}")
    Ho, Wo = _check_input(x, padding)
    if dout.shape[:3] != (x.shape[0], Ho, Wo):
        raise ValueError(f"winograd: dout must be (N, H_out, W_out, F) = ({x.shape[0]}, {Ho}, {Wo}, F) "
                         f"for x {x.shape} and padding {padding}, got {dout.shape}")
    if dout.dtype != x.dtype:
        raise TypeError(f"winograd: x and dout must have the same dtype, got {x.dtype} and {dout.dtype}")
    return Ho, Wo


def winograd_weights(w, dtype):
    """w (F, C, 3, 3) -> U (16, C, F), U[4ξ + ν, c, f] = (G w[f, c] Gᵀ)[ξ, ν], C-contiguous.

    In float64, rounded once to dtype, in Numba.  (``G @ w @ G.T`` in NumPy,
    F·C little products, took 0.6 ms at C = F = 64, a fifth of the whole
    convolution; as one product (F·C, 9) @ (9, 16) it went to a multi-threaded
    BLAS that fought other busy processes for the two cores.)
    """
    F, C = w.shape[:2]
    U = np.empty((16, C, F), dtype=dtype)
    _weight_transform(w, U)
    return U


# ----------------------------------------------------------------------------
# The naive twin: the equations, one tile position at a time
# ----------------------------------------------------------------------------

def conv3x3_winograd_nhwc_naive(x, w, padding):
    """x (N, H, W, C), w (F, C, 3, 3) -> out (N, H_out, W_out, F), stride 1.

    For every tile position (ty, tx), for all images and channel pairs at once:

        d = x_pad[:, 2ty : 2ty + 4, 2tx : 2tx + 4, :]       input tiles (N, 4, 4, C)
        V = Bᵀ d B                                          per (n, c)
        M[n, f] = Σ_c U[f, c] ⊙ V[n, c],   U = G w Gᵀ       per (f, c), computed once
        Y = Aᵀ M A                                          (N, F, 2, 2)
    """
    Ho, Wo = _check(x, w, padding)
    N, H, W, C = x.shape
    F = w.shape[0]
    dt = x.dtype
    Bd, Gd, Ad = B.astype(dt), G.astype(dt), A.astype(dt)
    th, tw = (Ho + 1) // 2, (Wo + 1) // 2                        # tiles per column / row
    U = Gd @ w.astype(dt) @ Gd.T                                 # (F, C, 4, 4)
    # zeros: `padding` before, and after it enough for whole tiles (one more if H_out is odd)
    xp = np.pad(x, ((0, 0), (padding, 2 * th + 2 - H - padding), (padding, 2 * tw + 2 - W - padding), (0, 0)))
    out = np.empty((N, 2 * th, 2 * tw, F), dtype=dt)
    for ty in range(th):
        for tx in range(tw):
            d = xp[:, 2 * ty : 2 * ty + 4, 2 * tx : 2 * tx + 4, :].transpose(0, 3, 1, 2)  # (N, C, 4, 4)
            V = Bd.T @ d @ Bd                                                       # (N, C, 4, 4)
            M = np.einsum("fcab,ncab->nfab", U, V)                                  # (N, F, 4, 4)
            Y = Ad.T @ M @ Ad                                                       # (N, F, 2, 2)
            out[:, 2 * ty : 2 * ty + 2, 2 * tx : 2 * tx + 2, :] = Y.transpose(0, 2, 3, 1)
    return np.ascontiguousarray(out[:, :Ho, :Wo, :])


def conv3x3_winograd_weight_grad_nhwc_naive(x, dout, padding):
    """x (N, H, W, C), dout (N, H_out, W_out, F) -> dw (F, C, 3, 3): the weight
    gradient of ``conv3x3_winograd_nhwc(x, w, padding)``, the forward's adjoint
    with respect to w.  For every tile position (ty, tx), all images at once:

        V  = Bᵀ d B,    d = x_pad[:, 2ty : 2ty + 4, 2tx : 2tx + 4, :]      (N, C, 4, 4)
        Z  = A δ Aᵀ,    δ = dout[:, 2ty : 2ty + 2, 2tx : 2tx + 2, :]       (N, F, 4, 4)
        M[f, c] += Σ_n V[n, c] ⊙ Z[n, f]                                   (F, C, 4, 4)

    and at the end dw[f, c] = Gᵀ M[f, c] G.  (δ past an odd H_out or W_out
    is zero: those outputs do not exist, so they pass no gradient back.)
    """
    Ho, Wo = _check_grad(x, dout, padding)
    N, H, W, C = x.shape
    dt = x.dtype
    Bd, Gd, Ad = B.astype(dt), G.astype(dt), A.astype(dt)
    th, tw = (Ho + 1) // 2, (Wo + 1) // 2
    xp = np.pad(x, ((0, 0), (padding, 2 * th + 2 - H - padding), (padding, 2 * tw + 2 - W - padding), (0, 0)))
    dp = np.pad(dout, ((0, 0), (0, 2 * th - Ho), (0, 2 * tw - Wo), (0, 0)))   # zeros: whole tiles
    M = np.zeros((dout.shape[3], C, 4, 4), dtype=dt)
    for ty in range(th):
        for tx in range(tw):
            d = xp[:, 2 * ty : 2 * ty + 4, 2 * tx : 2 * tx + 4, :].transpose(0, 3, 1, 2)     # (N, C, 4, 4)
            delta = dp[:, 2 * ty : 2 * ty + 2, 2 * tx : 2 * tx + 2, :].transpose(0, 3, 1, 2)  # (N, F, 2, 2)
            V = Bd.T @ d @ Bd                                                          # (N, C, 4, 4)
            Z = Ad @ delta @ Ad.T                                                      # (N, F, 4, 4)
            M += np.einsum("ncab,nfab->fcab", V, Z)
    return Gd.T @ M @ Gd                                                               # (F, C, 3, 3)


# ----------------------------------------------------------------------------
# Numba kernels
# ----------------------------------------------------------------------------

def _triples(AT):
    """Aᵀ[i] = e(a0) + s · (e(a1) + e(a2)): the (a0, a1, a2) and s of each row
    (every row of Aᵀ has a +1 and two equal ±1)."""
    cols, signs = [], []
    for row in AT:
        nz = [int(a) for a in np.flatnonzero(row)]
        for a0 in nz:
            a1, a2 = (a for a in nz if a != a0)
            if row[a0] == 1 and row[a1] == row[a2]:
                break
        assert len(nz) == 3 and row[a0] == 1 and row[a1] == row[a2] and abs(row[a1]) == 1
        cols.append((a0, a1, a2))
        signs.append(int(row[a1]))
    return np.array(cols), np.array(signs)


# Aᵀ as an index table, so that the output transform adds and subtracts
# instead of multiplying by ±1 (half the arithmetic of the plain matrix product).
_AT_COLS, _AT_SIGNS = _triples(AT)    # (2, 3), (2,)

# The input transform (``_input_transform_row``) and the output-gradient
# transform (``_grad_transform_row``) write the rows of Bᵀ and of A out, as
# ``_g`` does for G; these are the matrices they write out.
assert np.array_equal(BT, [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]])
assert np.array_equal(A, [[1, 0], [1, 1], [1, -1], [0, -1]])


@numba.njit(cache=True, nogil=True)
def _add3(dst, a, b, c, s):
    """dst = a + s · (b + c) for s = ±1."""
    if s > 0:
        for m in range(dst.size):
            dst[m] = a[m] + (b[m] + c[m])
    else:
        for m in range(dst.size):
            dst[m] = a[m] - (b[m] + c[m])


@numba.njit(cache=True, nogil=True)
def _g(a0, a1, a2):
    """G times the column (a0, a1, a2): the rows of G written out (no multiplications by 0)."""
    return a0, 0.5 * (a0 + a1 + a2), 0.5 * (a0 - a1 + a2), a2


@numba.njit(cache=True, nogil=True)
def _weight_transform(w, U):
    """U[4ξ + ν, c, f] = (G g Gᵀ)[ξ, ν] for g = w[f, c], in float64: G applied
    to the 3 columns of g, then to the 4 rows of the result.

    The 16 values of one (f, c) go to 16 places C·F numbers apart, a power of
    two that maps them all to the same L1 cache set; so one input channel's
    values are gathered in ``tmp`` first and copied out row by row (measured:
    6× faster at C = F = 64, 0.03 ms).
    """
    F, C = w.shape[0], w.shape[1]
    tmp = np.empty((16, F))
    for c in range(C):
        for f in range(F):
            col0 = _g(np.float64(w[f, c, 0, 0]), np.float64(w[f, c, 1, 0]), np.float64(w[f, c, 2, 0]))  # (G g)[:, 0]
            col1 = _g(np.float64(w[f, c, 0, 1]), np.float64(w[f, c, 1, 1]), np.float64(w[f, c, 2, 1]))
            col2 = _g(np.float64(w[f, c, 0, 2]), np.float64(w[f, c, 1, 2]), np.float64(w[f, c, 2, 2]))
            for xi in range(4):
                u = _g(col0[xi], col1[xi], col2[xi])                                   # (G g Gᵀ)[ξ, :]
                for nu in range(4):
                    tmp[4 * xi + nu, f] = u[nu]
        for k in range(16):
            for f in range(F):
                U[k, c, f] = tmp[k, f]


@numba.njit(cache=True, nogil=True)
def _split_columns(x, n0, n1, pad, X):
    """X[n − n0, hp, wp % 2, wp // 2, c] = x_pad[n, hp, wp, c]: images [n0, n1)
    zero-padded (to whole tiles) and split into even and odd columns.

    X: (nb, 2·th + 2, 2, tw + 1, C).  Why split: tile tx reads padded columns
    2·tx + b, b = 0…3, i.e. even/odd column tx + b // 2.  In the split image
    the same column b of *all* tiles of a tile row is one contiguous run of
    tw·C numbers, so the input transform below runs long loops instead of
    16 loops of C numbers per tile.  (The loop over c is the only one
    indexing x with a varying index: Numba then needs no negative-index
    check inside it and it vectorises.)  The weight gradient splits dout
    the same way: padding 0, X (nb, 2·th, 2, tw, F), zeros past an odd
    H_out or W_out.
    """
    H, W, C = x.shape[1], x.shape[2], x.shape[3]
    Hp, Wq = X.shape[1], X.shape[3]
    for n in range(n0, n1):
        for hp in range(Hp):
            h = hp - pad
            for parity in range(2):
                for q in range(Wq):
                    w = 2 * q + parity - pad
                    if h < 0 or h >= H or w < 0 or w >= W:
                        for c in range(C):
                            X[n - n0, hp, parity, q, c] = 0
                    else:
                        for c in range(C):
                            X[n - n0, hp, parity, q, c] = x[n, h, w, c]


@numba.njit(cache=True, nogil=True)
def _input_transform_row(Xf, nl, ty, C, R, V3, r):
    """V[4ξ + ν, t] = (Bᵀ d_t B)[ξ, ν] for the tiles t of tile row ty of image
    nl of the split block X (see ``_split_columns``), d_t[a, b] =
    x_pad[2ty + a, 2tx + b].  In two steps, for all tiles of the row at once:

        R[ξ] = Σ_a Bᵀ[ξ, a] · x_pad[2ty + a, :]              rows: 2 loops of (tw + 1)·C
        V[4ξ + ν, t] = Σ_b Bᵀ[ν, b] · R[ξ, 2tx + b]          columns: 4 loops of tw·C

    Each loop reads the 4 runs that one Bᵀ combines and writes its 4
    results (the rows of Bᵀ written out: d0 − d2, d1 + d2, d2 − d1,
    d1 − d3).  Column 2tx + b of all tiles is the run R[ξ, b % 2, (b // 2)·C
    + m], m < tw·C, of the split rows, and the row's part of V_k is the run
    V3[k, r, :].  Xf: X (nb, Hp, 2, tw + 1, C) with its last two axes merged;
    V3: V (16, T, C) as (16, T / tw, tw·C), r = nl·th + ty; R: (4, 2,
    (tw + 1)·C) scratch.  Why this form (measured, 128 images, 16 channels,
    1 thread): runs sliced out of the arrays and combined two at a time,
    24 loops per tile row, took 1.5 ms; indexing the arrays themselves
    (each slice costs ~12 ns of set-up, reference counting included) and
    writing 4 runs per loop, 0.7 ms.  The offset C + m is unsigned, so
    Numba adds no negative-index check (which stops vectorisation).
    """
    W1 = R.shape[2]
    h = 2 * ty
    for p in range(2):
        for m in range(W1):
            d0, d1, d2, d3 = Xf[nl, h, p, m], Xf[nl, h + 1, p, m], Xf[nl, h + 2, p, m], Xf[nl, h + 3, p, m]
            R[0, p, m] = d0 - d2
            R[1, p, m] = d1 + d2
            R[2, p, m] = d2 - d1
            R[3, p, m] = d1 - d3
    c = np.uint64(C)
    for xi in range(4):
        for m in range(np.uint64(V3.shape[2])):
            d0, d1, d2, d3 = R[xi, 0, m], R[xi, 1, m], R[xi, 0, c + m], R[xi, 1, c + m]
            V3[4 * xi, r, m] = d0 - d2
            V3[4 * xi + 1, r, m] = d1 + d2
            V3[4 * xi + 2, r, m] = d2 - d1
            V3[4 * xi + 3, r, m] = d1 - d3


@numba.njit(cache=True, nogil=True)
def _output_transform_row(Mf, t0, tw, F, S, Of):
    """O[i, j, tx, :] = (Aᵀ m A)[i, j] for the tiles t0 + tx, tx < tw, of one
    tile row, m = M[:, t0 + tx, :] (16 × F).  In two steps:

        S[i, ν] = Σ_ξ Aᵀ[i, ξ] · M[4ξ + ν]       8 loops of tw·F
        O[i, j] = Σ_ν Aᵀ[j, ν] · S[i, ν]         4 loops of tw·F

    over runs of M, S and O (Mf, Of: M and O with their last two axes merged;
    S: (2, 4, tw·F) scratch).
    """
    L = tw * F
    a = t0 * F
    for i in range(2):
        r0, r1, r2 = _AT_COLS[i, 0], _AT_COLS[i, 1], _AT_COLS[i, 2]
        for nu in range(4):
            _add3(S[i, nu], Mf[4 * r0 + nu, a : a + L], Mf[4 * r1 + nu, a : a + L],
                  Mf[4 * r2 + nu, a : a + L], _AT_SIGNS[i])
    for i in range(2):
        for j in range(2):
            c0, c1, c2 = _AT_COLS[j, 0], _AT_COLS[j, 1], _AT_COLS[j, 2]
            _add3(Of[i, j], S[i, c0], S[i, c1], S[i, c2], _AT_SIGNS[j])


@numba.njit(cache=True, nogil=True)
def _store_row(O, out, n, ty):
    """out[n, 2ty + i, 2tx + j, :] = O[i, j, tx, :] where that is inside out
    (an odd H_out or W_out drops the last tile's extra row or column)."""
    Ho, Wo, F = out.shape[1], out.shape[2], out.shape[3]
    for i in range(2):
        if 2 * ty + i < Ho:
            for j in range(2):
                for tx in range(min(O.shape[2], (Wo - j + 1) // 2)):
                    for f in range(F):
                        out[n, 2 * ty + i, 2 * tx + j, f] = O[i, j, tx, f]


@numba.njit(cache=True, nogil=True)
def _input_transform(x, b0, b1, pad, th, X, Xf, R, V3):
    """V[4ξ + ν, t, :] = (Bᵀ d_t B)[ξ, ν] for all tiles t = (nl·th + ty)·tw + tx
    of the images b0 + nl in [b0, b1): split columns (X), then the input
    transform tile row by tile row.  (Steps 1 and 2, shared by the
    convolution and its weight gradient; Xf, V3: X and V reshaped as in
    ``_input_transform_row``.)
    """
    C = x.shape[3]
    _split_columns(x, b0, b1, pad, X)
    for nl in range(b1 - b0):
        for ty in range(th):
            _input_transform_row(Xf, nl, ty, C, R, V3, nl * th + ty)


@numba.njit(cache=True, nogil=True)
def _winograd_images(x, n0, n1, U, pad, nb, X, R, V, M, S, O, out):
    """out[n] = the Winograd convolution of x[n] with U (16, C, F), n in [n0, n1).

    Blocks of nb images: split columns (X), input transform (V: 16 × (T, C),
    T = nb·th·tw tiles), 16 products M_k = V_k @ U_k (M: 16 × (T, F)),
    output transform into out, one tile row (O) at a time.  X, R, V, M, S, O:
    scratch of at least one block's size.
    """
    Ho, Wo, F = out.shape[1], out.shape[2], out.shape[3]
    th, tw = (Ho + 1) // 2, (Wo + 1) // 2
    Xf = X.reshape(X.shape[0], X.shape[1], 2, -1)
    V3 = V.reshape(16, V.shape[1] // tw, -1)
    Mf, Of = M.reshape(16, -1), O.reshape(2, 2, -1)
    for b0 in range(n0, n1, nb):
        b1 = min(b0 + nb, n1)
        T = (b1 - b0) * th * tw
        _input_transform(x, b0, b1, pad, th, X, Xf, R, V3)
        for k in range(16):
            gemm(V[k, :T], U[k], M[k, :T])
        for nl in range(b1 - b0):
            for ty in range(th):
                _output_transform_row(Mf, (nl * th + ty) * tw, tw, F, S, Of)
                _store_row(O, out, b0 + nl, ty)


def _input_scratch(t, b, th, tw, C, dt):
    """Thread t's work arrays for the input transform of b images (``_input_transform``):
    X (b, 2·th + 2, 2, tw + 1, C) split columns, R (4, 2, (tw + 1)·C), V (16, b·th·tw, C)."""
    X = scratch(t, "winograd_X", b * (2 * th + 2) * 2 * (tw + 1) * C, dt).reshape(b, 2 * th + 2, 2, tw + 1, C)
    R = scratch(t, "winograd_R", 8 * (tw + 1) * C, dt).reshape(4, 2, (tw + 1) * C)
    V = scratch(t, "winograd_V", 16 * b * th * tw * C, dt).reshape(16, b * th * tw, C)
    return X, R, V


def _block_images(th, tw, C, F, itemsize, block_bytes):
    """Images per block so that V and M, 16·nb·th·tw·(C + F) numbers, fit block_bytes (≥ 1)."""
    return max(1, block_bytes // (16 * th * tw * (C + F) * itemsize))


def conv3x3_winograd_nhwc(x, w, padding, block_bytes=None):
    """x (N, H, W, C) C-contiguous, w (F, C, 3, 3), padding 0, 1 or 2 ->
    out (N, H_out, W_out, F) C-contiguous: the stride-1 convolution, i.e.
    ``conv_nhwc.conv_forward_nhwc(x, w, 1, padding)``, by Winograd F(2×2, 3×3).

    ``block_bytes`` (default ``BLOCK_BYTES``) bounds each thread's V + M.
    """
    Ho, Wo = _check(x, w, padding)
    x = np.ascontiguousarray(x)
    N, H, W, C = x.shape
    F = w.shape[0]
    dt = x.dtype
    U = winograd_weights(w, dt)
    out = np.empty((N, Ho, Wo, F), dtype=dt)
    if N == 0:
        return out
    th, tw = (Ho + 1) // 2, (Wo + 1) // 2
    nb = _block_images(th, tw, C, F, dt.itemsize, block_bytes or BLOCK_BYTES)

    def work(t, n0, n1):
        b = min(nb, n1 - n0)
        X, R, V = _input_scratch(t, b, th, tw, C, dt)
        M = scratch(t, "winograd_M", 16 * b * th * tw * F, dt).reshape(16, b * th * tw, F)
        S = scratch(t, "winograd_S", 8 * tw * F, dt).reshape(2, 4, tw * F)
        O = scratch(t, "winograd_O", 4 * tw * F, dt).reshape(2, 2, tw, F)
        _winograd_images(x, n0, n1, U, padding, b, X, R, V, M, S, O, out)

    parallel_for(work, N)
    return out


# ----------------------------------------------------------------------------
# The weight gradient
# ----------------------------------------------------------------------------

@numba.njit(cache=True, nogil=True)
def _grad_transform_row(Df, nl, ty, S, Z3, r):
    """Z[4ξ + ν, t] = (A δ_t Aᵀ)[ξ, ν] for the tiles t of tile row ty of image
    nl, δ_t[i, j] = dout[2ty + i, 2tx + j] (2 × 2, zero past the edge).  In
    two steps, for all tiles of the row at once:

        S[ξ, j]   = Σ_i A[ξ, i] · δ[i, j]          rows: 2 loops of tw·F
        Z[4ξ + ν] = Σ_j A[ν, j] · S[ξ, j]          columns: 4 loops of tw·F

    Each loop reads 2 runs and writes 4 (the rows of A written out: e0,
    e0 + e1, e0 − e1, −e1).  Df: dout split into even and odd columns like X
    (``_split_columns`` with padding 0), last two axes merged: the j-th
    pixels of all tiles of output row h are the run Df[nl, h, j].  Z3: Z
    (16, T, F) as (16, T / tw, tw·F), r = nl·th + ty; S: (4, 2, tw·F)
    scratch.  (Tiles do not overlap in the output, so no run is shifted.)
    """
    L = S.shape[2]
    h = 2 * ty
    for j in range(2):
        for m in range(L):
            d0, d1 = Df[nl, h, j, m], Df[nl, h + 1, j, m]
            S[0, j, m] = d0
            S[1, j, m] = d0 + d1
            S[2, j, m] = d0 - d1
            S[3, j, m] = -d1
    for xi in range(4):
        for m in range(L):
            d0, d1 = S[xi, 0, m], S[xi, 1, m]
            Z3[4 * xi, r, m] = d0
            Z3[4 * xi + 1, r, m] = d0 + d1
            Z3[4 * xi + 2, r, m] = d0 - d1
            Z3[4 * xi + 3, r, m] = -d1


@numba.njit(cache=True, nogil=True)
def _winograd_weight_grad_images(x, dout, n0, n1, pad, nb, X, R, V, D, S, Z, M):
    """M_k += Σ_t V_k[t]ᵀ Z_k[t] over the tiles of the images n in [n0, n1):
    M (16, C, F), one thread's accumulator.

    Blocks of nb images: the input transform of the forward (V: 16 × (T, C),
    T = nb·th·tw tiles), dout split into even and odd columns (D), the
    output-gradient transform (Z: 16 × (T, F)), then 16 products
    M_k (C × F) += V_kᵀ Z_k (BLAS, β = 1).  X, R, V, D, S, Z: scratch of at
    least one block's size.
    """
    Ho, Wo = dout.shape[1], dout.shape[2]
    th, tw = (Ho + 1) // 2, (Wo + 1) // 2
    Xf = X.reshape(X.shape[0], X.shape[1], 2, -1)
    Df = D.reshape(D.shape[0], D.shape[1], 2, -1)
    V3, Z3 = V.reshape(16, V.shape[1] // tw, -1), Z.reshape(16, Z.shape[1] // tw, -1)
    for b0 in range(n0, n1, nb):
        b1 = min(b0 + nb, n1)
        T = (b1 - b0) * th * tw
        _input_transform(x, b0, b1, pad, th, X, Xf, R, V3)
        _split_columns(dout, b0, b1, 0, D)
        for nl in range(b1 - b0):
            for ty in range(th):
                _grad_transform_row(Df, nl, ty, S, Z3, nl * th + ty)
        for k in range(16):
            gemm(V[k, :T], Z[k, :T], M[k], 1.0, True, False)


@numba.njit(cache=True, nogil=True)
def _gt(m0, m1, m2, m3):
    """Gᵀ times the column (m0, m1, m2, m3): the rows of Gᵀ written out."""
    return m0 + 0.5 * (m1 + m2), 0.5 * (m1 - m2), 0.5 * (m1 + m2) + m3


@numba.njit(cache=True, nogil=True)
def _weight_grad_transform(M, dw):
    """dw[f, c] = Gᵀ m G for m[ξ, ν] = M[4ξ + ν, c, f], in float64 (M: float64):
    Gᵀ applied to the 4 columns of m, then to the 3 rows of the result.  The
    adjoint of ``_weight_transform``, and like it, it gathers one input
    channel's 16 × F values first (they lie C·F apart)."""
    F, C = dw.shape[0], dw.shape[1]
    tmp = np.empty((16, F))
    for c in range(C):
        for k in range(16):
            for f in range(F):
                tmp[k, f] = M[k, c, f]
        for f in range(F):
            col0 = _gt(tmp[0, f], tmp[4, f], tmp[8, f], tmp[12, f])        # (Gᵀ m)[:, 0]
            col1 = _gt(tmp[1, f], tmp[5, f], tmp[9, f], tmp[13, f])
            col2 = _gt(tmp[2, f], tmp[6, f], tmp[10, f], tmp[14, f])
            col3 = _gt(tmp[3, f], tmp[7, f], tmp[11, f], tmp[15, f])
            for p in range(3):
                r = _gt(col0[p], col1[p], col2[p], col3[p])                  # (Gᵀ m G)[p, :]
                for q in range(3):
                    dw[f, c, p, q] = r[q]


def conv3x3_winograd_weight_grad_nhwc(x, dout, padding, block_bytes=None):
    """x (N, H, W, C), dout (N, H_out, W_out, F), padding 0, 1 or 2 ->
    dw (F, C, 3, 3): the weight gradient of the 3×3 stride-1 convolution
    (``conv_nhwc.conv_backward_nhwc(x, w, dout, 1, padding)[1]``), by
    Winograd F(2×2, 3×3):

        M_k = Σ_t V_k[t]ᵀ Z_k[t]   (C × F),   dw[f, c] = Gᵀ M[:, c, f] G

    Each thread takes a slice of the batch and accumulates its own M; the
    threads' M are added (in float64) and transformed afterwards.
    ``block_bytes`` (default ``BLOCK_BYTES``) bounds each thread's V + Z.
    """
    Ho, Wo = _check_grad(x, dout, padding)
    x, dout = np.ascontiguousarray(x), np.ascontiguousarray(dout)
    N, H, W, C = x.shape
    F = dout.shape[3]
    dt = x.dtype
    if N == 0:
        return np.zeros((F, C, 3, 3), dtype=dt)   # no images, no gradient
    th, tw = (Ho + 1) // 2, (Wo + 1) // 2
    nb = _block_images(th, tw, C, F, dt.itemsize, block_bytes or BLOCK_BYTES)
    partial_M = np.zeros((num_threads(), 16, C, F), dtype=dt)

    def work(t, n0, n1):
        b = min(nb, n1 - n0)
        X, R, V = _input_scratch(t, b, th, tw, C, dt)
        D = scratch(t, "winograd_D", b * 2 * th * 2 * tw * F, dt).reshape(b, 2 * th, 2, tw, F)
        S = scratch(t, "winograd_S", 8 * tw * F, dt).reshape(4, 2, tw * F)
        Z = scratch(t, "winograd_Z", 16 * b * th * tw * F, dt).reshape(16, b * th * tw, F)
        _winograd_weight_grad_images(x, dout, n0, n1, padding, b, X, R, V, D, S, Z, partial_M[t])

    parallel_for(work, N)
    dw = np.empty((F, C, 3, 3), dtype=dt)
    _weight_grad_transform(partial_M.sum(axis=0, dtype=np.float64), dw)
    return dw
