"""The paper's method: ternarized weights (Eqs. 1–4), residual expansion (Eq. 5),
whole-network conversion, and variants to compare against.

    quantize.py   threshold, alpha, ternary_codes, ternarize, straight_through_gradient
    layers.py     TernaryConv2d, TernaryLinear (latent weight kept, α·T used forward)
    convert.py    ternarize_model(model, t_ex=...), to_full_precision(model)
"""

from tqref.ternary import variants  # registers "ttq" and "binary" in VARIANTS
from tqref.ternary.convert import VARIANTS, is_ternary, quantized_layers, ternarize_model, to_full_precision
from tqref.ternary.layers import TernaryConv2d, TernaryLinear, TernaryMixin, to_float
from tqref.ternary.quantize import (
    PAPER_DELTA,
    PAPER_DELTA_LISTS,
    Ternarized,
    alpha,
    delta_factors_for,
    effective_weight,
    straight_through_gradient,
    ternarize,
    ternarize_expansions,
    ternary_codes,
    threshold,
)

__all__ = [
    "alpha", "delta_factors_for", "effective_weight", "is_ternary", "PAPER_DELTA",
    "PAPER_DELTA_LISTS", "quantized_layers", "straight_through_gradient", "ternarize",
    "ternarize_expansions", "ternarize_model", "Ternarized", "ternary_codes", "TernaryConv2d",
    "TernaryLinear", "TernaryMixin", "threshold", "to_float", "to_full_precision", "variants",
    "VARIANTS",
]
