"""Whole-network conversion: the transparent wrap.

``ternarize_model(model)`` walks any tqref model and replaces every Conv2d
and Linear with its ternary twin, *sharing* the weight arrays: the trained
full-precision weights become the latent weights, so a full-precision
checkpoint can be fine-tuned as ternary, and the state-dict keys stay the
same.  The paper ternarizes the whole network, first and last layers
included; ``keep_first`` / ``keep_last`` leave those in full precision.
``to_full_precision(model)`` undoes the wrap (the latent weights are then
used as they are).

Build the optimiser *after* converting: conversion keeps the arrays, but a
variant with extra parameters (TTQ's scales) adds new ones.
"""

from tqref.nn.layers import Conv2d, WeightedLayer
from tqref.ternary.layers import TernaryConv2d, TernaryLinear, to_float

# variant name -> (conv class, linear class, extra options); variants.py adds its own
VARIANTS = {
    "paper": (TernaryConv2d, TernaryLinear, {}),
    "twn": (TernaryConv2d, TernaryLinear, {"threshold_rule": "twn"}),
}


def is_quantized_layer(module):
    """True when ``module``'s forward pass uses quantized weights.

    The one test for it, used by the conversion, the summaries, the
    checkpoint export (``tqref.io``) and the packed format (``tqref.deploy``):
    every quantized layer class says so with the class attribute
    ``is_quantized = True`` (``TernaryMixin`` and the variants' mixins), and
    such a layer offers ``quantize()`` (a list of ``Ternarized``, one per
    expansion), ``effective_weight()`` and ``t_ex``.  A plain layer, or any
    other module, has no such attribute: False.
    """
    return bool(getattr(module, "is_quantized", False))


def is_ternary(model):
    """True when any layer of ``model`` is a ternary (or other quantized) layer."""
    return any(is_quantized_layer(m) for _, m in model.named_modules())


def _weighted_layers(model):
    """(parent, key, layer) for every Conv2d/Linear, in forward (registration) order."""
    found = []
    for key, child in model.children().items():  # depth first: conv1, layer1..3, linear
        if isinstance(child, WeightedLayer):
            found.append((model, key, child))
        else:
            found.extend(_weighted_layers(child))
    return found


def ternarize_model(model, t_ex=1, variant="paper", keep_first=False, keep_last=False, **options):
    """Convert ``model`` in place and return it.

    t_ex:        expansions per layer (1, 2 or 4; Eq. 5)
    variant:     "paper" (Eqs. 1–4), "twn" (Δ = 0.7·mean|W|), and, once
                 ``tqref.ternary.variants`` is imported, "ttq" and "binary"
    keep_first:  leave the first Conv2d/Linear in full precision
    keep_last:   leave the last one in full precision
    options:     passed to the layers: delta_factors, threshold_rule, per_channel, clip

    Converting a model that already holds quantized layers is an error
    (it would ternarize an already ternary forward pass); call
    ``to_full_precision`` first to change settings.
    """
    if variant not in VARIANTS:
        raise ValueError(f"ternarize_model: variant: expected one of {sorted(VARIANTS)}, got {variant!r}")
    if is_ternary(model):
        raise ValueError(f"ternarize_model: {model.describe()} is already converted; "
                         f"call to_full_precision(model) first to convert it with other settings")
    conv_cls, linear_cls, defaults = VARIANTS[variant]
    layers = _weighted_layers(model)
    if not layers:
        raise ValueError(f"ternarize_model: {model.describe()} has no Conv2d or Linear layer to convert")
    chosen = layers[1 if keep_first else 0: len(layers) - 1 if keep_last else len(layers)]
    settings = dict(defaults, t_ex=t_ex, **options)
    for parent, key, layer in chosen:
        cls = conv_cls if isinstance(layer, Conv2d) else linear_cls
        parent.replace_child(key, cls.from_float(layer, **settings))
    return model


def to_full_precision(model):
    """Undo ``ternarize_model`` in place: every quantized layer becomes the
    plain layer around its latent weight (extra variant parameters, such as
    TTQ's scales, are dropped).  Returns the model."""
    for parent, key, layer in _weighted_layers(model):
        if is_quantized_layer(layer):
            parent.replace_child(key, to_float(layer))
    return model


def quantized_layers(model):
    """(qualified name, layer) for every quantized layer, in forward order."""
    return [(name, m) for name, m in model.named_modules() if is_quantized_layer(m)]
