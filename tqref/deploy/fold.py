"""Batch-norm folding that keeps the codes ternary, and the folded description
of a CIFAR ResNet that the packed format stores and the engine runs.

One ternary convolution followed by BatchNorm in evaluation mode
(σ = √(running_var + ε), per output channel f):

    y_f = γ_f · (conv(x, α·T)_f − μ_f) / σ_f + β_f
        = (γ_f·α / σ_f) · conv(x, T)_f + (β_f − γ_f·μ_f / σ_f)
        =        s_f    · conv(x, T)_f +            c_f

because the convolution is linear in the weight.  conv(x, T) needs no
multiplication (T ∈ {−1, 0, +1}): the inputs under +1 are added, those under
−1 subtracted, those under 0 skipped.  The per-channel scale s multiplies
each output value once.  We never fold s into the weights: α·γ/σ·T would
no longer be ternary.

We store the BN part as g = γ/σ and c = β − g·μ ("scale" and "shift"), one
pair per output channel, and α separately, so that the file keeps the
paper's (codes, α) and s = α·g is one multiplication per channel at load
time.  A conv with a bias b before the BN folds as c = β + g·(b − μ).  A
layer without BN (the final Linear) has g = 1 and c = its bias.

Residual expansion (Eq. 5), t_ex codes T_k with scales α_k:

    conv(x, Σ_k α_k T_k) = Σ_k α_k · conv(x, T_k)

so the folded layer is y = Σ_k s_k ⊙ conv(x, T_k) + c with s_k = α_k·g.
Two ways to run it, both exact (``groups``):

    "expansions"  one group per expansion: codes T_k, scale s_k.
                  adds = Σ_k nnz(T_k) per output, t_ex multiplies.
    "merged"      (default) one group per *level*: the thresholds are nested
                  (Δ_1 < Δ_2 < ...), so where T_m ≠ 0 every T_k with k < m is
                  the same sign; the weight W_eff = sign · (α_1 + ... + α_m)
                  takes 2·t_ex + 1 values.  Group m holds the codes sign·1[level
                  = m] with scale g·(α_1 + ... + α_m).  adds = nnz(W_eff) per
                  output (each position added once, not once per expansion),
                  still t_ex multiplies.  For t_ex = 1 the two are identical.

Everything here is stateless NumPy; the Numba kernels live in
``tqref.kernels.ternary_engine``.
"""

from typing import NamedTuple, Optional

import numpy as np

from tqref.ternary.convert import is_quantized_layer

GROUP_FORMS = ("merged", "expansions")
STAGES = ("layer1", "layer2", "layer3")  # the BasicBlock stages of tqref.models.ResNetCIFAR


class FoldedLayer(NamedTuple):
    """One Conv2d or Linear of the network with the BatchNorm after it folded.

    name:          qualified name in the tqref model ("conv1", "layer2.0.conv1", "linear")
    kind:          "conv" or "linear"
    weight_shape:  (F, C, HH, WW) for a conv, (F, D) for a linear
    stride, padding: of the convolution (1, 0 for a linear)
    codes:         ternary layer: (t_ex, *weight_shape) int8 in {−1, 0, +1}; None if full precision
    alpha:         ternary layer: (t_ex,) or (t_ex, F) (per channel) floats α_k; None otherwise
    dense_weight:  full-precision layer: the weight, weight_shape; None if ternary
    scale:         (F,) g = γ/σ (ones when no BN follows)
    shift:         (F,) c = β − γ·μ/σ (+ g·b for a conv bias), or the linear bias (zeros if none)

    Folded output:  y = g ⊙ (Σ_k α_k · conv(x, T_k)) + c     (ternary)
                    y = g ⊙ conv(x, W) + c                  (full precision)
    """

    name: str
    kind: str
    weight_shape: tuple
    stride: int
    padding: int
    codes: Optional[np.ndarray]
    alpha: Optional[np.ndarray]
    dense_weight: Optional[np.ndarray]
    scale: np.ndarray
    shift: np.ndarray

    @property
    def ternary(self):
        return self.codes is not None

    @property
    def t_ex(self):
        """Number of expansions (0 for a full-precision layer)."""
        return 0 if self.codes is None else int(self.codes.shape[0])

    @property
    def per_channel(self):
        return self.alpha is not None and self.alpha.ndim == 2


# ---------------------------------------------------------------- the math
def fold_batchnorm(gamma, beta, running_mean, running_var, eps, conv_bias=None):
    """BN in evaluation mode as a per-channel affine map y = g·z + c of its input z.

        g = γ / √(running_var + ε)        c = β − g·μ   (+ g·b when the conv had a bias b)

    All inputs (C,) arrays (eps a float).  Computed in float64 and returned in
    float64 (callers cast): the float32 rounding then happens once, at the end.
    """
    gamma, beta, mean, var = (np.asarray(a, dtype=np.float64) for a in (gamma, beta, running_mean, running_var))
    if np.any(var + eps <= 0):
        raise ValueError(f"fold_batchnorm: running_var: expected running_var + eps > 0, "
                         f"found min(running_var) = {float(var.min())} with eps = {eps}")
    g = gamma / np.sqrt(var + float(eps))
    c = beta - g * mean
    if conv_bias is not None:
        c = c + g * np.asarray(conv_bias, dtype=np.float64)
    return g, c


def expansion_scales(alpha, scale):
    """s_k = α_k · g for every expansion k and output channel f.

    alpha: (t_ex,) or (t_ex, F); scale g: (F,)  ->  (t_ex, F) float64.
    """
    alpha = np.asarray(alpha, dtype=np.float64)
    g = np.asarray(scale, dtype=np.float64)
    return (alpha[:, None] if alpha.ndim == 1 else alpha) * g[None, :]


def groups(codes, alpha, scale, form="merged"):
    """The (codes, scales) groups the engine runs:  y = Σ_g scales[g] ⊙ conv(x, codes[g]) + c.

    codes: (t_ex, F, ...) int8 in {−1, 0, +1};  alpha: (t_ex,) or (t_ex, F);  scale: (F,)
    form:  "merged" or "expansions" (module docstring)
    Returns (group_codes (G, F, ...) int8, group_scales (G, F) float64), G = t_ex.

    The merged form needs nested codes (the paper's increasing thresholds
    guarantee it); anything else raises a ValueError naming the first bad position.
    """
    if form not in GROUP_FORMS:
        raise ValueError(f"groups: form: expected one of {GROUP_FORMS}, got {form!r}")
    codes = np.asarray(codes)
    s = expansion_scales(alpha, scale)  # (t_ex, F)
    t_ex = codes.shape[0]
    if form == "expansions" or t_ex == 1:
        return codes.astype(np.int8, copy=False), s
    # nested: |T_k| is non-increasing in k and every non-zero T_k has the sign of T_1
    magnitude = np.abs(codes)
    not_nested = np.any(magnitude[1:] > magnitude[:-1], axis=0) | np.any((codes != 0) & (codes != codes[0:1]), axis=0)
    if np.any(not_nested):
        where = tuple(int(i) for i in np.argwhere(not_nested)[0])
        raise ValueError(f"groups: codes: the merged form expects nested expansions (T_k ≠ 0 only where "
                         f"T_(k−1) has the same sign), found codes {codes[(slice(None),) + where].tolist()} "
                         f"at weight index {where}; use form='expansions'")
    level = magnitude.sum(axis=0)  # m = number of expansions that keep the weight
    sign = codes[0]
    merged = np.stack([(sign * (level == m)).astype(np.int8) for m in range(1, t_ex + 1)])
    return merged, np.cumsum(s, axis=0)  # level m: g · (α_1 + ... + α_m)


# ---------------------------------------------------------------- from a tqref model
def layer_geometry(layer):
    """(kind, weight shape, stride, padding) of a tqref Conv2d or Linear, plain or
    quantized: ("conv", (F, C, HH, WW), stride, padding) or ("linear", (F, D), 1, 0)."""
    shape = tuple(int(s) for s in layer.params["weight"].shape)
    if len(shape) == 4:
        return "conv", shape, int(layer.stride), int(layer.padding)
    return "linear", shape, 1, 0


def resnet_program(model):
    """What a tqref CIFAR ResNet (``tqref.models.ResNetCIFAR``) runs, read from
    its own modules, in forward order.  Returns (layers, blocks):

        layers   [(name, layer, bn)]: "conv1" (bn1); for every block "layerS.B.conv1"
                 (its bn1) and "layerS.B.conv2" (its bn2); "linear" (bn None)
        blocks   [(name, block)]: every BasicBlock, "layerS.B", with its conv1,
                 conv2 and shortcut (None: the identity)

    The names are the model's qualified module names (state-dict prefixes).
    The folding (``fold_resnet``) and the engine's program
    (``tqref.deploy.engine.model_layout``) both walk this list, so the
    architecture is described once, by the model class.
    """
    layers, blocks = [("conv1", model.conv1, model.bn1)], []
    for stage in STAGES:
        for index, block in enumerate(getattr(model, stage)):
            name = f"{stage}.{index}"
            layers.append((f"{name}.conv1", block.conv1, block.bn1))
            layers.append((f"{name}.conv2", block.conv2, block.bn2))
            blocks.append((name, block))
    layers.append(("linear", model.linear, None))
    return layers, blocks


def resnet_architecture(model):
    """The sizes that identify a tqref CIFAR ResNet (the packed format's
    ``architecture``, without the quantizer): model, depth, num_classes,
    in_channels, widths (the output channels of each stage)."""
    widths = [int(getattr(model, stage)[0].conv1.params["weight"].shape[0]) for stage in STAGES]
    return {"model": "resnet_cifar", "depth": int(model.depth), "num_classes": int(model.num_classes),
            "in_channels": int(model.conv1.params["weight"].shape[1]), "widths": widths}


def fold_layer(name, layer, bn=None):
    """A ``FoldedLayer`` from a tqref Conv2d / Linear (plain or quantized) and
    the BatchNorm2d after it (or None).  Arrays come out in the layer's dtype.

    Quantized layers must have symmetric scales (one α per expansion, or per
    channel): TTQ with W_p ≠ W_n is refused, since s·(Σ₊ − Σ₋) needs one scale.
    """
    weight = layer.params["weight"]
    dtype = weight.dtype
    kind, shape, stride, padding = layer_geometry(layer)
    bias = layer.params.get("bias")
    F = shape[0]
    if bn is not None:
        g, c = fold_batchnorm(bn.params["weight"], bn.params["bias"], bn.buffers["running_mean"],
                              bn.buffers["running_var"], bn.eps, conv_bias=bias)
    else:
        g = np.ones(F)
        c = np.zeros(F) if bias is None else np.asarray(bias, dtype=np.float64)
    codes = alpha = dense = None
    if is_quantized_layer(layer):
        expansions = list(layer.quantize())
        alphas = []
        for k, e in enumerate(expansions):
            a = e.alpha
            if isinstance(a, tuple):
                raise ValueError(f"fold_layer: {name}: expansion {k}: expected one scale α (symmetric levels), "
                                 f"found the pair (W_p, W_n) = {a} (TTQ with W_p ≠ W_n is not supported by "
                                 f"the packed format)")
            alphas.append(np.broadcast_to(np.asarray(a, dtype=np.float64), np.shape(a)))
        codes = np.stack([np.asarray(e.codes, dtype=np.int8) for e in expansions])
        bad = (codes < -1) | (codes > 1)
        if np.any(bad):
            raise ValueError(f"fold_layer: {name}: codes: expected values in {{-1, 0, 1}}, found "
                             f"{sorted(set(np.unique(codes[bad]).tolist()))}")
        alpha = np.stack(alphas).astype(dtype)
    else:
        dense = weight.copy()
    return FoldedLayer(name, kind, shape, stride, padding, codes, alpha, dense, g.astype(dtype), c.astype(dtype))


def fold_resnet(model):
    """Fold a tqref CIFAR ResNet (``tqref.models.ResNetCIFAR``, ternarized or
    not) into its list of ``FoldedLayer``s, in forward order:

        conv1 (+bn1), then for every block layerS.B.conv1 (+bn1), layerS.B.conv2 (+bn2), then linear

    (the order of ``resnet_program``).  Uses the BN *running* statistics
    whatever the model's mode (evaluation semantics).  Returns (architecture
    dict, layers): the architecture is ``resnet_architecture`` plus
    "quantizer" (``quantizer_settings``)."""
    from tqref.models.resnet_cifar import ResNetCIFAR

    if not isinstance(model, ResNetCIFAR):
        raise ValueError(f"fold_resnet: model: expected a tqref CIFAR ResNet (tqref.models.resnet20 ... "
                         f"resnet56, ternarized or not), found {type(model).__name__}")
    layers = [fold_layer(name, layer, bn) for name, layer, bn in resnet_program(model)[0]]
    return dict(resnet_architecture(model), quantizer=quantizer_settings(model)), layers


def quantizer_settings(model):
    """The ternarization settings of the model's quantized layers (informational:
    the engine reads t_ex and per_channel from each layer's arrays)."""
    found = [m for _, m in model.named_modules() if is_quantized_layer(m)]
    if not found:
        return None
    first = found[0]
    variant = getattr(first, "variant", None) or ("twn" if getattr(first, "threshold_rule", "max") == "twn"
                                                  else "paper")
    factors = getattr(first, "delta_factors", None)
    return {"variant": variant, "t_ex": int(getattr(first, "t_ex", 1)),
            "delta_factors": None if factors is None else [float(d) for d in factors],
            "threshold_rule": getattr(first, "threshold_rule", None),
            "per_channel": bool(getattr(first, "per_channel", False)),
            "ternary_layers": len(found)}
