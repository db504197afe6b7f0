"""The paper's quantizer, Eqs. (1)–(5) of ``docs/method.md``.

For one layer with full-precision *latent* weight W (kept and trained):

    Eq. (1)  threshold     Δ = δ · max_i |W_i|                     (δ = 0.05)
    Eq. (2)  scaling       α = mean{ |W_i| : |W_i| ≥ Δ }
    Eq. (3)  codes         T_i = +1 if W_i ≥ Δ,  −1 if W_i ≤ −Δ,  0 otherwise
                           W' = α · T       (the weight the forward pass uses)
    Eq. (4)  backward      ∂L/∂W_i = ∂L/∂W'_i · 1[|W_i| < 1]     (straight through)
    Eq. (5)  expansion     W_eff = Σ_k α_k T_k with Δ_k = δ_k · max|W|,
                           δ = (0.05, 0.10) for t_ex = 2, (0.05, 0.10, 0.15, 0.20) for t_ex = 4;
                           ∂L/∂W = t_ex · ∂L/∂W_eff · 1[|W| < 1]

Everything here is a stateless function of W, and these functions are the
reference backend's quantizer (``tqref.backend``).  The layers in
``tqref.ternary.layers`` call their backend's ``ternarize_expansions`` and
``straight_through_gradient`` at every forward and backward pass, so Δ, α
and T always describe the current latent weights.

Two options beyond the paper, for comparison (a *rule* and a *granularity*):

    threshold_rule="twn"   Δ = 0.7 · mean|W|   (TWN, Li & Liu 2016; δ is then 0.7)
    per_channel=True       one Δ and one α per output channel (axis 0 of W)

Edge case, defined here rather than left to NaN: when W is all zero (or a
channel is, with ``per_channel``), max|W| = 0 gives Δ = 0; we set T = 0 and
α = 0 there, so W' = 0 = W exactly and the gradient still flows by Eq. (4).
"""

from typing import NamedTuple

import numpy as np

PAPER_DELTA = 0.05
TWN_DELTA = 0.7
# Eq. (5): the paper's δ lists, one threshold per expansion, nested (increasing).
PAPER_DELTA_LISTS = {1: (0.05,), 2: (0.05, 0.10), 4: (0.05, 0.10, 0.15, 0.20)}
THRESHOLD_RULES = ("max", "twn")
STE_CLIP = 1.0


class Ternarized(NamedTuple):
    """One ternarization of a weight tensor W (F, ...).

    codes:     T, int8, same shape as W, values in {−1, 0, +1}      (Eq. 3)
    alpha:     α, float (or (F,) per channel)                       (Eq. 2)
    threshold: Δ, float (or (F,) per channel)                       (Eq. 1)
    """

    codes: np.ndarray
    alpha: object
    threshold: object

    def weight(self, dtype=np.float32):
        """W' = α · T, in ``dtype``."""
        return _broadcast(self.alpha, self.codes.ndim, dtype) * self.codes.astype(dtype)

    @property
    def sparsity(self):
        """Fraction of zero codes: weights that cost no operation."""
        return float(np.mean(self.codes == 0)) if self.codes.size else 0.0


def _broadcast(value, ndim, dtype):
    """A scalar stays a scalar; an (F,) vector becomes (F, 1, 1, ...)."""
    value = np.asarray(value, dtype=dtype)
    return value if value.ndim == 0 else value.reshape((-1,) + (1,) * (ndim - 1))


def _reduce_axes(w, per_channel):
    return tuple(range(1, w.ndim)) if per_channel else None


def check_delta_factor(delta_factor, who="delta_factor", threshold_rule="max"):
    """δ must lie strictly between 0 and 1 for the paper's rule: δ = 0 makes
    every weight ±1 (no sparsity), δ ≥ 1 zeroes all but the largest weight.
    TWN's rule multiplies mean|W| < max|W|, so there any δ > 0 is allowed."""
    if threshold_rule not in THRESHOLD_RULES:
        raise ValueError(f"threshold_rule: expected one of {THRESHOLD_RULES}, got {threshold_rule!r}")
    upper = 1.0 if threshold_rule == "max" else np.inf
    if isinstance(delta_factor, bool) or not isinstance(delta_factor, (int, float, np.floating)) \
            or not 0.0 < float(delta_factor) < upper:
        expected = "a number in (0, 1) (the paper uses 0.05)" if threshold_rule == "max" else \
            "a positive number (TWN uses 0.7)"
        raise ValueError(f"{who}: expected {expected}, got {delta_factor!r}")
    return float(delta_factor)


def delta_factors_for(t_ex=1, delta_factors=None, threshold_rule="max"):
    """The δ list for ``t_ex`` expansions (Eq. 5): the paper's by default
    (for TWN's rule the same list scaled by 0.7/0.05: 0.7, 1.4, ...),
    or a custom strictly increasing list of length t_ex."""
    if isinstance(t_ex, bool) or not isinstance(t_ex, (int, np.integer)) or t_ex not in PAPER_DELTA_LISTS:
        raise ValueError(f"t_ex: expected 1, 2 or 4 (the paper's expansions), got {t_ex!r}")
    if delta_factors is None:
        scale = 1.0 if threshold_rule == "max" else TWN_DELTA / PAPER_DELTA
        delta_factors = tuple(round(scale * d, 12) for d in PAPER_DELTA_LISTS[t_ex])
    factors = tuple(delta_factors)
    if len(factors) != t_ex:
        raise ValueError(f"delta_factors: expected {t_ex} values for t_ex={t_ex}, got {len(factors)}: {factors}")
    for k, d in enumerate(factors):
        check_delta_factor(d, f"delta_factors[{k}]", threshold_rule)
    if any(b <= a for a, b in zip(factors, factors[1:])):
        raise ValueError(f"delta_factors: expected a strictly increasing list (nested thresholds), got {factors}")
    return tuple(float(d) for d in factors)


# --------------------------------------------------------------- Eq. (1)
def threshold(latent_weight, delta_factor=PAPER_DELTA, threshold_rule="max", per_channel=False):
    """Eq. (1): Δ = δ · max|W|   (rule "max", the paper's), or
    Δ = δ · mean|W| (rule "twn", with δ = 0.7 in TWN).

    latent_weight: W (F, C, HH, WW) or (F, D)
    Returns a float, or an (F,) array when ``per_channel``.
    No gradient flows through Δ (Eq. 4 treats it as a constant).
    """
    check_delta_factor(delta_factor, threshold_rule=threshold_rule)
    ### BEGIN SOLUTION
    magnitude = np.abs(latent_weight)
    axes = _reduce_axes(latent_weight, per_channel)
    stat = magnitude.max(axis=axes) if threshold_rule == "max" else magnitude.mean(axis=axes)
    delta = delta_factor * stat.astype(np.float64)
    return float(delta) if not per_channel else delta
    ### END SOLUTION


# --------------------------------------------------------------- Eq. (3)
def ternary_codes(latent_weight, threshold):
    """Eq. (3): T_i = +1 if W_i ≥ Δ, −1 if W_i ≤ −Δ, 0 otherwise; int8.

    The tie |W_i| = Δ goes to ±1 on both sides (symmetric; the authors' code
    sends W_i = −Δ to 0, a measure-zero difference).  Δ = 0 (an all-zero
    tensor or channel) gives T = 0."""
    ### BEGIN SOLUTION
    delta = _broadcast(threshold, latent_weight.ndim, np.float64)
    w = latent_weight.astype(np.float64, copy=False)
    live = delta > 0
    codes = ((w >= delta) & live).astype(np.int8) - ((w <= -delta) & live).astype(np.int8)
    return codes
    ### END SOLUTION


# --------------------------------------------------------------- Eq. (2)
def alpha(latent_weight, threshold, per_channel=False):
    """Eq. (2): α = (1/|I_Δ|) Σ_{i ∈ I_Δ} |W_i| with I_Δ = {i : |W_i| ≥ Δ}.

    For fixed codes T, this α minimises ||W − α·T||²: setting the derivative
    −2 Σ_{i∈I_Δ} T_i (W_i − α T_i) to zero gives α = Σ|W_i| / |I_Δ|.
    Returns a float, or an (F,) array when ``per_channel``; 0 where I_Δ is
    empty (only possible when Δ = 0, i.e. W = 0 there).  No gradient flows
    through α: Eq. (4) treats it as a constant, although α depends on W
    (see ``straight_through_gradient`` for the exact derivative)."""
    ### BEGIN SOLUTION
    magnitude = np.abs(latent_weight).astype(np.float64, copy=False)
    delta = _broadcast(threshold, latent_weight.ndim, np.float64)
    selected = (magnitude >= delta) & (delta > 0)
    axes = _reduce_axes(latent_weight, per_channel)
    total = np.where(selected, magnitude, 0.0).sum(axis=axes)
    count = selected.sum(axis=axes)
    result = np.where(count > 0, total / np.maximum(count, 1), 0.0)
    return float(result) if not per_channel else result
    ### END SOLUTION


def ternarize(latent_weight, delta_factor=PAPER_DELTA, threshold_rule="max", per_channel=False):
    """Eqs. (1)–(3) in one call: returns ``Ternarized(codes, alpha, threshold)``.

    latent_weight: W (F, C, HH, WW) or (F, D), float32 or float64.
    """
    delta = threshold(latent_weight, delta_factor, threshold_rule, per_channel)
    return Ternarized(ternary_codes(latent_weight, delta), alpha(latent_weight, delta, per_channel), delta)


# --------------------------------------------------------------- Eq. (5)
def ternarize_expansions(latent_weight, delta_factors=PAPER_DELTA_LISTS[1], threshold_rule="max",
                         per_channel=False):
    """Eq. (5): one ``Ternarized`` per expansion k, each of the *same*
    latent W with its own threshold Δ_k = δ_k · max|W|: Eqs. (1)–(3) called
    once per expansion.

    A ternary layer calls its backend's ``ternarize_expansions`` at every
    forward pass (``tqref.backend``): this one on the reference backend; the
    fast backend's kernel (``tqref.kernels.ops``) gives the same result in
    two passes over W for all expansions together.
    """
    ### BEGIN SOLUTION
    return [ternarize(latent_weight, d, threshold_rule, per_channel) for d in delta_factors]
    ### END SOLUTION


def effective_weight(expansions, dtype=np.float32):
    """W_eff = Σ_k α_k T_k  (Eq. 5; for t_ex = 1 simply α·T, Eq. 3)."""
    ### BEGIN SOLUTION
    total = expansions[0].weight(dtype)
    for expansion in expansions[1:]:
        total += expansion.weight(dtype)
    return total
    ### END SOLUTION


# --------------------------------------------------------------- Eq. (4)
def straight_through_gradient(grad_effective, latent_weight, t_ex=1, clip=STE_CLIP):
    """Eq. (4) (and its Eq. (5) form): the gradient that reaches the latent W.

        ∂L/∂W_i = t_ex · ∂L/∂W_eff,i · 1[|W_i| < clip]

    grad_effective: ∂L/∂W_eff, the convolution's weight gradient, shape of W.

    This is not the exact derivative of W' = α·T(W) (one Δ and one α per
    tensor, t_ex = 1; each expansion adds one such term).  The codes T are
    piecewise constant, but α = mean{|W_i| : |W_i| ≥ Δ} depends on W, so
    wherever no |W_i| equals Δ the exact gradient is, with g = ∂L/∂W' and
    n the number of non-zero codes,

        ∂L/∂W_j = T_j · (Σ_i T_i g_i) / n

    (Jacobian T Tᵀ / n): zero below the threshold and one shared magnitude
    above it.  It moves every weight above Δ by the same amount, which
    rescales α; a code changes only when that shared move carries a weight
    across Δ, never weight by weight.  At |W_i| = Δ, W' jumps and has no
    derivative.  Notebook 04 derives and
    checks this.  Eq. (4) instead holds α and Δ constant and passes each
    g_i *straight through* (not multiplied by α), so every latent weight
    moves on its own and its code changes when it crosses ±Δ; weights that
    have grown past |W| = clip (1) stop receiving gradient.  Each of the
    t_ex expansions passes its own copy, hence the factor t_ex.
    """
    ### BEGIN SOLUTION
    mask = np.abs(latent_weight) < clip
    return np.where(mask, grad_effective * grad_effective.dtype.type(t_ex), 0).astype(grad_effective.dtype,
                                                                                      copy=False)
    ### END SOLUTION
