"""Softmax cross-entropy, averaged over the batch.

Shapes: logits z (N, K) float32/float64; labels y (N,) integers in [0, K).

    p[n, k] = exp(z[n, k]) / Σ_j exp(z[n, j])                 (softmax)
    L       = (1/N) Σ_n −log p[n, y_n]
            = (1/N) Σ_n (logsumexp(z[n]) − z[n, y_n])
    ∂L/∂z[n, k] = (p[n, k] − 1[k = y_n]) / N

Numerical stability: exp(1e4) overflows even in float64, so we use
logsumexp(z) = M + log Σ_j exp(z_j − M) with M = max_j z_j.  Every
exponent is then ≤ 0 and the sum is ≥ 1 (the maximum contributes exp(0)),
so neither overflow nor log(0) can happen.

Unlike the other operations this one has no separate backward: the loss is
the end of the graph, and the gradient comes almost for free with it.

    loss, dlogits = softmax_cross_entropy(logits, labels)

``loss`` is a Python float; ``dlogits`` has the shape and dtype of logits.
"""

import math

import numpy as np

from ..validation import check_array


def _check_inputs(fn, logits, labels):
    check_array(logits, f"{fn}: logits", ndim=2, finite=False)
    N, K = logits.shape
    if N == 0 or K == 0:
        raise ValueError(f"{fn}: logits: expected shape (N, K) with N ≥ 1 and K ≥ 1, got {logits.shape}")
    if not isinstance(labels, np.ndarray):
        labels = np.asarray(labels)
    if labels.dtype.kind not in "iu":
        raise ValueError(f"{fn}: labels: expected an integer array of class indices, "
                         f"got dtype {labels.dtype}")
    if labels.shape != (N,):
        raise ValueError(f"{fn}: labels: expected shape ({N},) (one per row of logits {logits.shape}), "
                         f"got {labels.shape}")
    bad = (labels < 0) | (labels >= K)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{fn}: labels: expected class indices in [0, {K}) for logits {logits.shape}, "
                         f"found {int(bad.sum())} outside, e.g. labels[{first}] = {int(labels[first])}")
    return labels


def softmax_cross_entropy_naive(logits, labels):
    """Loop version of :func:`softmax_cross_entropy` (same result)."""
    labels = _check_inputs("softmax_cross_entropy_naive", logits, labels)
    N, K = logits.shape
    dlogits = np.empty_like(logits)
    total = 0.0
    for n in range(N):
        row = [float(logits[n, k]) for k in range(K)]
        m = max(row)
        s = 0.0
        for k in range(K):
            s += math.exp(row[k] - m)
        y = int(labels[n])
        total += (m + math.log(s)) - row[y]
        for k in range(K):
            p = math.exp(row[k] - m) / s
            dlogits[n, k] = (p - (1.0 if k == y else 0.0)) / N
    return total / N, dlogits


def softmax_cross_entropy(logits, labels):
    """Mean softmax cross-entropy and its gradient.

    logits: (N, K) float32 or float64
    labels: (N,) integer class indices in [0, K)

    Returns (loss: float, dlogits: (N, K) like logits).
    Raises ValueError naming ``labels`` for non-integer, mis-shaped or
    out-of-range labels.
    """
    labels = _check_inputs("softmax_cross_entropy", logits, labels)
    N = logits.shape[0]
    rows = np.arange(N)
    shifted = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    s = e.sum(axis=1)
    loss = float(np.mean(np.log(s) - shifted[rows, labels]))
    dlogits = e / s[:, None]
    dlogits[rows, labels] -= 1
    dlogits /= N
    return loss, dlogits
