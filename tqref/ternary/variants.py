"""Neighbouring quantizers to compare against the paper's (``method.md``,
"Neighbouring methods"): TTQ's trained scales and BWN's binary weights.

Both plug into the same two WeightedLayer hooks as ``TernaryConv2d``
(``weight_for_forward`` / ``accept_weight_gradient``) and register
themselves in ``tqref.ternary.convert.VARIANTS`` when this module is
imported (``import tqref.ternary`` does it), so

    ternarize_model(model, variant="ttq")      # TTQConv2d / TTQLinear
    ternarize_model(model, variant="binary")   # BinaryConv2d / BinaryLinear

convert a whole network.  As with the paper's layers, ``params['weight']``
stays the full-precision latent W; the quantized W' is rebuilt from it at
every forward pass.

TTQ — Trained Ternary Quantization (Zhu, Han, Mao, Dally, ICLR 2017)
--------------------------------------------------------------------
Same threshold and codes as Eqs. (1), (3), but the two non-zero levels are
two *trained* per-layer parameters, ``scale_pos`` = W_p and ``scale_neg`` = W_n:

    forward                                   backward (g_i = ∂L/∂W'_i)
    Δ    = 0.05 · max|W|                      Δ, I_p, I_n held constant
    I_p  = {i : W_i ≥ Δ},  I_n = {i : W_i ≤ −Δ}
    W'_i = +W_p   on I_p                      ∂L/∂W_p = Σ_{i∈I_p} g_i
    W'_i = −W_n   on I_n                      ∂L/∂W_n = −Σ_{i∈I_n} g_i
    W'_i = 0      otherwise                   ∂L/∂W_i = W_p·g_i on I_p, g_i on the zeros,
                                                        W_n·g_i on I_n

The W_p and W_n gradients are exact (W' is linear in them for fixed codes).
The latent gradient is TTQ's *scaled* straight-through estimator: each
weight's gradient is multiplied by the level it was quantized to, and there
is no |W| < 1 clip (TTQ has none).  TTQ thresholds weights normalised to
[−1, 1] at t = 0.05; that gives exactly the codes of Δ = 0.05 · max|W|.
W_p and W_n are not clamped to stay positive (TTQ does not clamp either).

Initial scales (``from_float``): Eq. (2) restricted to each sign,
W_p = mean{|W_i| : i ∈ I_p}, W_n = mean{|W_i| : i ∈ I_n}, so a converted
layer starts as close to its full-precision weights as ternary levels allow.
A sign with no weight (say, all weights positive) starts at Eq. (2)'s α over
both signs; an all-zero W starts both at ``TTQ_FALLBACK_SCALE`` = 1e-3.  A
positive start matters: a zero W_p would also zero the latent gradient on I_p.

BWN — binary weights of XNOR-Net (Rastegari, Ordonez, Redmon, Farhadi, ECCV 2016)
---------------------------------------------------------------------------------
    forward                                   backward (g_i = ∂L/∂W'_i)
    α    = mean_i |W_i|   (all weights)       α held constant
    B_i  = +1 if W_i ≥ 0, −1 otherwise        (sign(0) := +1, so every weight is ±α)
    W'   = α · B                              ∂L/∂W_i = g_i · 1[|W_i| < 1]     (as Eq. 4)

The straight-through gradient is the paper's Eq. (4), not XNOR-Net's exact
derivative (which adds the 1/n term of ∂α/∂W); this keeps the comparison
with the paper's quantizer about the forward levels only.

What the summaries read (one entry per layer, like the paper's t_ex = 1):
``layer.quantize()`` -> ``[Ternarized(codes, alpha, threshold)]``,
``layer.t_ex`` = 1, ``layer.bits_per_weight`` (TTQ 2, binary 1).  For TTQ,
``alpha`` is a float when W_p == W_n and the pair ``(W_p, W_n)`` otherwise
(``TTQTernarized.weight()`` understands both); for binary, codes are ±1,
``alpha`` = α and ``threshold`` = 0.0.

Back to full precision: ``to_full_precision`` keeps only the latent weight
and bias; TTQ's scales (and their gradients) are dropped.
"""

import numpy as np

from tqref.nn.layers import Conv2d, Linear
from tqref.ternary import convert
from tqref.ternary.layers import _adopt
from tqref.ternary.quantize import PAPER_DELTA, STE_CLIP, Ternarized, ternary_codes, threshold

TTQ_DELTA = PAPER_DELTA  # TTQ's t = 0.05, the same δ as Eq. (1)
TTQ_FALLBACK_SCALE = 1e-3


def _check_conversion_options(variant, t_ex, options, allowed=()):
    """The options ``ternarize_model`` passes: t_ex must be 1 (these variants
    have no residual expansion) and only ``allowed`` options may appear."""
    if isinstance(t_ex, bool) or not isinstance(t_ex, (int, np.integer)) or t_ex != 1:
        raise ValueError(f"variant {variant!r}: t_ex: expected 1 (no residual expansion, Eq. 5, "
                         f"for this variant), got {t_ex!r}")
    unsupported = sorted(set(options) - set(allowed))
    if unsupported:
        accepted = f"only {sorted(allowed)}" if allowed else "none besides t_ex=1"
        raise ValueError(f"variant {variant!r}: unsupported option(s) {unsupported}; "
                         f"this variant accepts {accepted}")


# ===================================================================== TTQ
class TTQTernarized(Ternarized):
    """A TTQ ternarization: ``codes`` T ∈ {−1, 0, +1} (Eq. 3's codes),
    ``alpha`` = W_p when W_p == W_n, else the pair (W_p, W_n); ``threshold`` = Δ."""

    __slots__ = ()

    def weight(self, dtype=np.float32):
        """W' = W_p · 1[T = +1] − W_n · 1[T = −1], in ``dtype``."""
        scale_pos, scale_neg = (self.alpha, self.alpha) if np.ndim(self.alpha) == 0 else self.alpha
        return ttq_weight(self.codes, scale_pos, scale_neg, dtype)


def ttq_weight(codes, scale_pos, scale_neg, dtype=np.float32):
    """W'_i = +W_p where T_i = +1, −W_n where T_i = −1, 0 where T_i = 0."""
    levels = np.array([0.0, scale_pos, -scale_neg], dtype=dtype)
    return levels[codes]  # index −1 picks −W_n: the codes index the levels directly


def ttq_initial_scales(latent_weight, threshold_value):
    """Eq. (2) restricted to each sign: (mean |W| over I_p, mean |W| over I_n),
    with the fallbacks of the module docstring for an empty set.  Floats."""
    w = latent_weight.astype(np.float64, copy=False)
    codes = ternary_codes(w, threshold_value)
    magnitude = np.abs(w)
    means = [float(magnitude[codes == sign].mean()) if np.any(codes == sign) else 0.0 for sign in (1, -1)]
    both = float(magnitude[codes != 0].mean()) if np.any(codes != 0) else TTQ_FALLBACK_SCALE
    return tuple(m if m > 0 else both for m in means)


class TTQMixin:
    """Turns a Conv2d or Linear into its TTQ version: latent W plus the
    trained scales ``params['scale_pos']`` (W_p) and ``params['scale_neg']``
    (W_n), shape (), in the layer dtype.  Equations: module docstring."""

    is_quantized = True  # convert.is_quantized_layer
    variant = "ttq"
    t_ex = 1
    bits_per_weight = 2
    # ∂L/∂W_p sums over every weight with code +1 (hundreds to tens of
    # thousands of terms), so at the weights' learning rate a scale that starts
    # near 0.1 overshoots and can change sign, and the net stops learning
    # (measured in notebook 4: loss stuck at ln 10).  A 100× smaller step for
    # the scales trains; SGD reads this through model.lr_multipliers().
    param_lr_multipliers = {"scale_pos": 0.01, "scale_neg": 0.01}

    @classmethod
    def from_float(cls, layer, t_ex=1, **options):
        """The TTQ twin of ``layer``, sharing its weight and bias arrays;
        W_p and W_n start at the per-sign means of |W| (module docstring)."""
        _check_conversion_options(cls.variant, t_ex, options)
        new = _adopt(cls.__new__(cls), layer)
        # fresh dicts: adding the scales must not add them to ``layer`` too
        new.params, new.grads = dict(layer.params), dict(layer.grads)
        weight = new.params["weight"]
        scale_pos, scale_neg = ttq_initial_scales(weight, threshold(weight, TTQ_DELTA))
        new.add_param("scale_pos", np.array(scale_pos, dtype=weight.dtype))
        new.add_param("scale_neg", np.array(scale_neg, dtype=weight.dtype))
        return new

    def quantize(self):
        """``[TTQTernarized(codes, alpha, threshold)]`` of the current latent W
        and scales: codes T (Eq. 3), alpha W_p or (W_p, W_n), threshold Δ (Eq. 1)."""
        weight = self.params["weight"]
        delta = threshold(weight, TTQ_DELTA)
        scale_pos, scale_neg = float(self.params["scale_pos"]), float(self.params["scale_neg"])
        alpha = scale_pos if scale_pos == scale_neg else (scale_pos, scale_neg)
        return [TTQTernarized(ternary_codes(weight, delta), alpha, delta)]

    def effective_weight(self):
        """W' (module docstring) in the layer's dtype: what the forward pass uses."""
        codes = ternary_codes(self.params["weight"], threshold(self.params["weight"], TTQ_DELTA))
        return ttq_weight(codes, self.params["scale_pos"], self.params["scale_neg"],
                          self.params["weight"].dtype)

    # the two hooks of WeightedLayer
    def weight_for_forward(self):
        return self.effective_weight()

    def accept_weight_gradient(self, dw):
        """dw = ∂L/∂W' from the convolution -> ∂L/∂W_p, ∂L/∂W_n, ∂L/∂W.
        The codes are recomputed from the latent W, which backward does not
        change, so they are the forward pass's codes."""
        weight = self.params["weight"]
        codes = ternary_codes(weight, threshold(weight, TTQ_DELTA))
        positive, negative = codes == 1, codes == -1
        self.grads["scale_pos"][...] = dw[positive].sum()
        self.grads["scale_neg"][...] = -dw[negative].sum()
        # scaled straight-through: each weight's gradient times the level it was quantized to
        factor = np.where(positive, self.params["scale_pos"],
                          np.where(negative, self.params["scale_neg"], 1)).astype(dw.dtype, copy=False)
        self.grads["weight"][...] = factor * dw

    def extra_repr(self):
        return (f"{super().extra_repr()}, variant='ttq', scale_pos={float(self.params['scale_pos']):.4g}, "
                f"scale_neg={float(self.params['scale_neg']):.4g}")


class TTQConv2d(TTQMixin, Conv2d):
    """Conv2d with TTQ weights:  out = conv(x, W') + b,  W' ∈ {−W_n, 0, +W_p}.

    x: (N, C, H, W) -> out: (N, F, H', W').  ``params``: ``weight`` the latent
    W (F, C, HH, WW), ``bias`` (F,) if any, ``scale_pos`` and ``scale_neg`` shape ().
    """


class TTQLinear(TTQMixin, Linear):
    """Linear with TTQ weights:  out = x · W'ᵀ + b,  W' ∈ {−W_n, 0, +W_p}.

    x: (N, D) -> out: (N, F).  ``params``: ``weight`` the latent W (F, D),
    ``bias`` (F,) if any, ``scale_pos`` and ``scale_neg`` shape ().
    """


# ================================================================== binary
def binary_codes(latent_weight):
    """B_i = +1 if W_i ≥ 0, −1 otherwise (sign(0) := +1); int8, shape of W."""
    return np.where(latent_weight >= 0, 1, -1).astype(np.int8)


def binarize(latent_weight):
    """``Ternarized(codes=B, alpha=mean|W|, threshold=0.0)``: W' = α · B."""
    return Ternarized(binary_codes(latent_weight), float(np.abs(latent_weight).mean(dtype=np.float64)), 0.0)


class BinaryMixin:
    """Turns a Conv2d or Linear into its binary-weight (BWN) version; the
    only parameters are the plain layer's.  Equations: module docstring."""

    is_quantized = True  # convert.is_quantized_layer
    variant = "binary"
    t_ex = 1
    bits_per_weight = 1

    @classmethod
    def from_float(cls, layer, t_ex=1, clip=STE_CLIP, **options):
        """The binary twin of ``layer``, sharing its arrays.  ``clip``: the
        straight-through gradient stops where |W| ≥ clip (Eq. 4's 1)."""
        _check_conversion_options(cls.variant, t_ex, options, allowed=("clip",))
        if isinstance(clip, bool) or not isinstance(clip, (int, float, np.floating)) or not clip > 0:
            raise ValueError(f"variant {cls.variant!r}: clip: expected a positive number, got {clip!r}")
        new = _adopt(cls.__new__(cls), layer)
        new.clip = float(clip)  # the one setting; to_float removes it again
        return new

    def quantize(self):
        """``[Ternarized(codes ±1, alpha = mean|W|, threshold = 0.0)]``."""
        return [binarize(self.params["weight"])]

    def effective_weight(self):
        """W' = α · B in the layer's dtype: what the forward pass uses."""
        return self.quantize()[0].weight(self.params["weight"].dtype)

    # the two hooks of WeightedLayer
    def weight_for_forward(self):
        return self.effective_weight()

    def accept_weight_gradient(self, dw):
        """∂L/∂W = ∂L/∂W' · 1[|W| < clip]: Eq. (4), α held constant."""
        self.grads["weight"][...] = np.where(np.abs(self.params["weight"]) < self.clip, dw, 0)

    def extra_repr(self):
        return f"{super().extra_repr()}, variant='binary', clip={self.clip}"


class BinaryConv2d(BinaryMixin, Conv2d):
    """Conv2d with binary weights:  out = conv(x, α · sign(W)) + b.

    x: (N, C, H, W) -> out: (N, F, H', W').  ``params['weight']`` is the latent W (F, C, HH, WW).
    """


class BinaryLinear(BinaryMixin, Linear):
    """Linear with binary weights:  out = x · (α · sign(W))ᵀ + b.

    x: (N, D) -> out: (N, F).  ``params['weight']`` is the latent W (F, D).
    """


convert.VARIANTS["ttq"] = (TTQConv2d, TTQLinear, {})
convert.VARIANTS["binary"] = (BinaryConv2d, BinaryLinear, {})
