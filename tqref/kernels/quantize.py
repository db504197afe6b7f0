"""The paper's quantizer (Eqs. 1–3, 5) in two passes over the weights.

For a latent weight W and thresholds Δ_k = δ_k · max|W| (k = 1..t_ex):

    pass 1   m = max|W|                                          (Eq. 1)
    pass 2   for every W_i and every k:
                 T_k,i = sign(W_i) if |W_i| ≥ Δ_k else 0             (Eq. 3)
                 S_k += |W_i|, n_k += 1 where |W_i| ≥ Δ_k
             α_k = S_k / n_k  (0 when n_k = 0)                      (Eq. 2)

in float64, like the NumPy functions of ``tqref.ternary.quantize`` (the
naive twins); |W_i| ≥ Δ_k with Δ_k > 0 is the same test as
"W_i ≥ Δ_k or W_i ≤ −Δ_k".  Δ_k = 0 (an all-zero W) gives T = 0, α = 0.

    ternarize_max_rule(w, factors) -> codes (t_ex, w.size) int8, deltas (t_ex,), alphas (t_ex,)
"""

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def _max_abs(wf):
    m = 0.0
    for i in range(wf.size):
        a = abs(np.float64(wf[i]))
        if a > m:
            m = a
    return m


@numba.njit(cache=True, nogil=True)
def _codes_and_sums(wf, deltas, codes, totals, counts):
    K = deltas.size
    for k in range(K):
        totals[k] = 0.0
        counts[k] = 0
    for i in range(wf.size):
        v = np.float64(wf[i])
        a = abs(v)
        for k in range(K):
            d = deltas[k]
            if d > 0 and a >= d:
                codes[k, i] = 1 if v > 0 else -1
                totals[k] += a
                counts[k] += 1
            else:
                codes[k, i] = 0


def ternarize_max_rule(w, factors):
    """w: any shape, float32/64; factors: δ_1 < ... (validated by the caller)."""
    wf = np.ascontiguousarray(w).reshape(-1)
    m = _max_abs(wf)
    # the same float64 product as threshold(): δ · float64(max|W|)
    deltas = np.array([d * m for d in factors], dtype=np.float64)
    codes = np.empty((len(factors), wf.size), dtype=np.int8)
    totals = np.empty(len(factors))
    counts = np.empty(len(factors), dtype=np.int64)
    _codes_and_sums(wf, deltas, codes, totals, counts)
    alphas = np.where(counts > 0, totals / np.maximum(counts, 1), 0.0)
    return codes, deltas, alphas
