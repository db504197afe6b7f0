"""Ternary layers: a Conv2d / Linear whose forward pass uses W_eff = Σ_k α_k T_k.

The layer keeps exactly one weight array, ``params['weight']``: the
full-precision *latent* W that the optimiser updates.  At every forward pass
(training and evaluation alike) it recomputes Δ_k, α_k and T_k from the
current W (Eqs. 1–3, 5) and hands W_eff to the ordinary convolution; in the
backward pass it turns the convolution's ∂L/∂W_eff into ∂L/∂W by the
straight-through estimator (Eq. 4).  Nothing else changes: the same
functional operations, the same bias (added once, not once per expansion),
the same state-dict keys.

Summing t_ex convolutions with α_k T_k equals one convolution with their sum,
because convolution is linear in the weight:  Σ_k conv(x, α_k T_k) = conv(x, W_eff).
We run the single one; a test checks the equality.
"""


from tqref.backend import current_backend
from tqref.nn.layers import Conv2d, Linear
from tqref.ternary.quantize import STE_CLIP, delta_factors_for, effective_weight


class TernaryMixin:
    """Turns a WeightedLayer (Conv2d or Linear) into its ternary version by
    overriding the two hooks ``weight_for_forward`` and ``accept_weight_gradient``."""

    is_quantized = True  # the one test for "is this layer quantized": convert.is_quantized_layer

    def setup_ternary(self, t_ex=1, delta_factors=None, threshold_rule="max", per_channel=False,
                      clip=STE_CLIP):
        self.t_ex = t_ex
        self.delta_factors = delta_factors_for(t_ex, delta_factors, threshold_rule)
        self.threshold_rule = threshold_rule
        self.per_channel = bool(per_channel)
        self.clip = float(clip)
        self.quantize()  # validates the rule and factors now, not at the first forward

    def quantize(self):
        """Eqs. (1)–(3), (5) on the current latent weight: a list of t_ex
        ``Ternarized(codes, alpha, threshold)``, one per expansion (the
        backend's ``ternarize_expansions``: ``tqref.ternary.quantize`` on the
        reference backend, one Numba pass on the fast one)."""
        return current_backend().ternarize_expansions(self.params["weight"], self.delta_factors,
                                                      self.threshold_rule, self.per_channel)

    def effective_weight(self):
        """W_eff = Σ_k α_k T_k in the layer's dtype: what the forward pass uses."""
        return effective_weight(self.quantize(), self.params["weight"].dtype)

    # the two hooks of WeightedLayer
    def weight_for_forward(self):
        ### BEGIN SOLUTION
        return self.effective_weight()
        ### END SOLUTION

    def accept_weight_gradient(self, dw):
        """Eq. (4): ∂L/∂W = t_ex · ∂L/∂W_eff · 1[|W| < clip]."""
        ### BEGIN SOLUTION
        ste = current_backend().straight_through_gradient
        self.grads["weight"][...] = ste(dw, self.params["weight"], self.t_ex, self.clip)
        ### END SOLUTION

    @classmethod
    def from_float(cls, layer, **ternary_options):
        """The ternary layer that shares ``layer``'s arrays (its weight becomes
        the latent W): ``TernaryConv2d.from_float(conv, t_ex=2)``."""
        new = _adopt(cls.__new__(cls), layer)
        new.setup_ternary(**ternary_options)
        return new

    def extra_repr(self):
        return (f"{super().extra_repr()}, t_ex={self.t_ex}, delta_factors={self.delta_factors}, "
                f"threshold_rule={self.threshold_rule!r}, per_channel={self.per_channel}")


def _adopt(new, layer):
    """Let ``new`` share ``layer``'s arrays and settings (no copy), so the
    latent weight stays the trained one and an optimiser built before still
    points at the right arrays."""
    for key, value in vars(layer).items():
        object.__setattr__(new, key, value)
    object.__setattr__(new, "_children", {})  # weighted layers have no children
    new._cache = None
    return new


class TernaryConv2d(TernaryMixin, Conv2d):
    """Conv2d with ternarized weights:  out = conv(x, Σ_k α_k T_k) + b.

    x: (N, C, H, W) -> out: (N, F, H', W').  ``params['weight']`` is the latent W (F, C, HH, WW).
    """


class TernaryLinear(TernaryMixin, Linear):
    """Linear with ternarized weights:  out = x · (Σ_k α_k T_k)ᵀ + b.

    x: (N, D) -> out: (N, F).  ``params['weight']`` is the latent W (F, D).
    """


def to_float(layer):
    """The full-precision layer that shares a ternary layer's latent weight."""
    plain = Conv2d if isinstance(layer, Conv2d) else Linear
    new = _adopt(plain.__new__(plain), layer)
    for key in ("t_ex", "delta_factors", "threshold_rule", "per_channel", "clip"):
        new.__dict__.pop(key, None)
    # parameters a variant adds (TTQ's scale_pos, scale_neg) belong to the quantized layer only
    kept = [key for key in ("weight", "bias") if key in layer.params]
    new.params = {key: layer.params[key] for key in kept}
    new.grads = {key: layer.grads[key] for key in kept}
    return new
