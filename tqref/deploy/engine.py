"""The inference engine: a packed (folded, ternary) CIFAR ResNet's forward pass.

    packed = PackedModel.from_model(ternarize_model(resnet20(seed=0)).eval())   # in memory
    packed = load_packed("resnet20.tqpk.npz")                                   # from a file
    logits = packed.forward(x)           # x: (N, 3, 32, 32) normalised float32 -> (N, 10)

The program (He et al. 2016, CIFAR ResNet, "option A" shortcuts), with every
Conv2d + BatchNorm folded into y = Σ_g s_g ⊙ conv(x, T_g) + c
(``tqref.deploy.fold``):

    h = ReLU(conv1(x))                                    stem
    for each BasicBlock:  u = ReLU(convA(h))
                          h = ReLU(convB(u) + shortcut(h))   shortcut: identity, or option A
    z = Σ_{i,j} h[:, :, i, j]                              global pool as a sum (adds only) ...
    logits = linear(z) with its scales times 1/(H·W)      ... its 1/(H·W) folded into the linear's scale

The layers and blocks of that program are not described here a second
time: ``model_layout`` reads them from a tqref ``ResNetCIFAR`` of the same
depth (``tqref.deploy.fold.resnet_program``), and every packed model is
checked against it (``check_layers``).

Each ternary layer is one call of ``tqref.kernels.ternary_engine.ternary_conv2d``
(the linear as a 1×1 convolution), which also does the bias, the shortcut
add and the ReLU.  A full-precision layer (``keep_first`` / ``keep_last``
models) runs the fast backend's dense ``conv2d_forward`` (or the linear) and
the same per-channel scale and shift.

``forward_naive`` is the engine's twin built only from the public dense
operations of ``tqref.functional``: Σ_g s_g ⊙ conv2d_forward(x, T_g as
floats) + c, ``option_a_shortcut_forward``, ``add_forward``,
``relu_forward``, ``global_avg_pool_forward``, ``linear_forward``.  Tests
hold ``forward`` equal to it and both equal to the tqref model in
evaluation mode.

``PackedModel`` quacks like a tqref model for evaluation: ``forward``,
``training`` (always False), ``eval()``, ``train(False)``, ``dtype``, so
``tqref.train.evaluate(packed, images, labels)`` works unchanged.
"""

import functools

import numpy as np

from tqref import functional as F
from tqref.deploy.fold import (
    GROUP_FORMS,
    FoldedLayer,
    fold_resnet,
    groups,
    layer_geometry,
    resnet_architecture,
    resnet_program,
)
from tqref.kernels import ops as fast_ops
from tqref.kernels.ternary_engine import make_plan, plan_operation_counts, ternary_conv2d
from tqref.models.resnet_cifar import ResNetCIFAR


# ---------------------------------------------------------------- the architecture
def model_layout(model):
    """The engine's program for a tqref CIFAR ResNet, read from the model's
    modules (``tqref.deploy.fold.resnet_program``), in forward order.

    Returns (layers, blocks):
      layers: list of dicts {name, kind, shape, stride, padding}, one per Conv2d / Linear
      blocks: list of dicts {name, in, out, stride, shortcut: "identity" | "option_a"},
              one per BasicBlock: its input and output channels, its stride, and
              "option_a" where the model has a shortcut module (shape changes)
    """
    program_layers, program_blocks = resnet_program(model)
    layers = []
    for name, layer, _ in program_layers:
        kind, shape, stride, padding = layer_geometry(layer)
        layers.append(dict(name=name, kind=kind, shape=list(shape), stride=stride, padding=padding))
    blocks = []
    for name, block in program_blocks:
        _, (planes, in_planes, _, _), stride, _ = layer_geometry(block.conv1)
        blocks.append(dict(name=name, **{"in": in_planes, "out": planes}, stride=stride,
                           shortcut="identity" if block.shortcut is None else "option_a"))
    return layers, blocks


@functools.lru_cache(maxsize=8)
def _reference(depth, num_classes):
    """(resnet_architecture, layers, blocks) of tqref's ``ResNetCIFAR(depth,
    num_classes)``: the model is built (its random weights are not used) and
    read once per (depth, num_classes).  Treat the result as read-only."""
    model = ResNetCIFAR(depth, num_classes)
    return (resnet_architecture(model),) + model_layout(model)


def check_layers(architecture, layers, source="packed model"):
    """Raise a ValueError (naming ``source``, the layer, expected and found)
    unless ``layers`` (FoldedLayers) are exactly those of ``architecture``:
    those of tqref's ``ResNetCIFAR`` of its depth and number of classes.
    Returns that model's blocks (``model_layout``), which the engine runs."""
    for key in ("model", "depth", "num_classes", "in_channels", "widths"):
        if key not in architecture:
            raise ValueError(f"{source}: architecture: missing key {key!r} (expected keys model, depth, "
                             f"num_classes, in_channels, widths, layers)")
    if architecture["model"] != "resnet_cifar":
        raise ValueError(f"{source}: architecture 'model': expected 'resnet_cifar', found {architecture['model']!r}")
    try:
        depth, num_classes = int(architecture["depth"]), int(architecture["num_classes"])
    except (TypeError, ValueError) as err:
        raise ValueError(f"{source}: architecture: cannot describe a CIFAR ResNet: {err}") from None
    # Checked before the reference model is built, whose linear layer has num_classes
    # outputs: a corrupt num_classes must not make it allocate a huge weight.
    linear = [layer for layer in layers if layer.name == "linear"]
    if len(linear) != 1:
        raise ValueError(f"{source}: expected one layer 'linear', found {len(linear)}")
    if linear[0].weight_shape[0] != num_classes:
        raise ValueError(f"{source}: architecture 'num_classes': expected {linear[0].weight_shape[0]} "
                         f"(the outputs of layer 'linear'), found {num_classes}")
    try:
        reference, expected, blocks = _reference(depth, num_classes)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{source}: architecture: cannot describe a CIFAR ResNet: {err}") from None
    for key in ("in_channels", "widths"):
        if architecture[key] != reference[key]:
            raise ValueError(f"{source}: architecture {key!r}: expected {reference[key]!r} (tqref's CIFAR "
                             f"ResNet-{depth}), found {architecture[key]!r}")
    if len(layers) != len(expected):
        raise ValueError(f"{source}: expected {len(expected)} layers for depth {architecture['depth']}, "
                         f"found {len(layers)}")
    for want, layer in zip(expected, layers):
        found = dict(name=layer.name, kind=layer.kind, shape=list(layer.weight_shape), stride=layer.stride,
                     padding=layer.padding)
        for key in want:
            if want[key] != found[key]:
                raise ValueError(f"{source}: layer {want['name']!r}: {key}: expected {want[key]!r}, "
                                 f"found {found[key]!r}")
        _check_arrays(layer, source)
    return blocks


def _check_arrays(layer, source):
    shape, F_out = tuple(layer.weight_shape), layer.weight_shape[0]
    who = f"{source}: layer {layer.name!r}"
    if layer.ternary:
        if layer.codes.ndim != len(shape) + 1 or layer.codes.shape[1:] != shape:
            raise ValueError(f"{who}: codes: expected shape (t_ex, {', '.join(map(str, shape))}), "
                             f"found {layer.codes.shape}")
        t_ex = layer.codes.shape[0]
        if layer.alpha is None or layer.alpha.shape not in ((t_ex,), (t_ex, F_out)):
            raise ValueError(f"{who}: alpha: expected shape ({t_ex},) or ({t_ex}, {F_out}), "
                             f"found {None if layer.alpha is None else layer.alpha.shape}")
        if np.any((layer.codes < -1) | (layer.codes > 1)):
            raise ValueError(f"{who}: codes: expected values in {{-1, 0, 1}}, found "
                             f"{sorted(np.unique(layer.codes).tolist())}")
    elif layer.dense_weight is None or layer.dense_weight.shape != shape:
        raise ValueError(f"{who}: dense weight: expected shape {shape}, "
                         f"found {None if layer.dense_weight is None else layer.dense_weight.shape}")
    for key in ("scale", "shift"):
        value = getattr(layer, key)
        if value.shape != (F_out,):
            raise ValueError(f"{who}: {key}: expected shape ({F_out},), found {value.shape}")
    for key in ("alpha", "dense_weight", "scale", "shift"):
        value = getattr(layer, key)
        if value is not None and not np.all(np.isfinite(value)):
            raise ValueError(f"{who}: {key}: expected finite values, found NaN or inf")


# ---------------------------------------------------------------- the model
class PackedModel:
    """A folded ternary CIFAR ResNet ready for inference (see the module docstring).

    architecture:  dict (model, depth, num_classes, in_channels, widths, quantizer, ...)
    layers:        list of ``FoldedLayer`` in forward order (``model_layout``)
    metadata:      dict, free-form (what the exporter wrote)
    form:          "merged" (default) or "expansions": how t_ex > 1 codes are grouped
                   (``tqref.deploy.fold.groups``); same outputs, different add counts
    source:        how errors name this model (the file path when loaded)
    """

    def __init__(self, architecture, layers, metadata=None, form="merged", source="packed model"):
        if form not in GROUP_FORMS:
            raise ValueError(f"PackedModel: form: expected one of {GROUP_FORMS}, got {form!r}")
        # the blocks (residual structure) of tqref's ResNetCIFAR that ``layers`` match
        self.blocks = [dict(block) for block in check_layers(architecture, layers, source)]
        self.architecture = dict(architecture)
        self.metadata = dict(metadata or {})
        self.layers = list(layers)
        self.form = form
        self.source = source
        self.training = False
        self._by_name = {layer.name: layer for layer in self.layers}
        self._plans = {}

    @classmethod
    def from_model(cls, model, form="merged", metadata=None):
        """Fold a tqref CIFAR ResNet (its BN running statistics) into a
        PackedModel in the model's dtype, without writing a file."""
        architecture, layers = fold_resnet(model)
        architecture["layers"] = [_layer_entry(layer) for layer in layers]
        return cls(architecture, layers, metadata, form, source=f"PackedModel.from_model({model.describe()})")

    # -- what evaluation loops expect of a model
    @property
    def dtype(self):
        return self.layers[0].scale.dtype

    def eval(self):
        return self

    def train(self, mode=True):
        if mode:
            raise ValueError(f"{self.source}: train(True): a packed model is inference-only "
                             f"(BN is folded into fixed scales); train the tqref model instead")
        return self

    def __call__(self, x):
        return self.forward(x)

    def __repr__(self):
        a = self.architecture
        q = a.get("quantizer") or {}
        return (f"PackedModel(resnet{a['depth']}, {a['num_classes']} classes, t_ex={q.get('t_ex')}, "
                f"form={self.form!r}, {sum(layer.ternary for layer in self.layers)}/{len(self.layers)} "
                f"layers ternary, dtype={self.dtype})")

    def layer(self, name):
        """The ``FoldedLayer`` called ``name`` ("conv1", "layer1.0.conv2", "linear")."""
        if name not in self._by_name:
            raise KeyError(f"{self.source}: no layer {name!r}; layers: {[layer.name for layer in self.layers]}")
        return self._by_name[name]

    # -- plans
    def _plan(self, layer):
        if layer.name not in self._plans:
            codes, scales = groups(layer.codes, layer.alpha, layer.scale, self.form)
            if layer.kind == "linear":
                codes = codes[..., None, None]  # (G, F, D) -> (G, F, D, 1, 1): a 1×1 convolution
            dtype = layer.scale.dtype
            self._plans[layer.name] = make_plan(codes, scales.astype(dtype), layer.shift.astype(dtype))
        return self._plans[layer.name]

    def _check_input(self, x):
        C = int(self.architecture["in_channels"])
        if not isinstance(x, np.ndarray) or x.ndim != 4 or x.shape[1] != C:
            raise ValueError(f"{self.source}: x: expected an array (N, {C}, H, W) of normalised images, "
                             f"found {getattr(x, 'shape', type(x).__name__)}")
        if x.dtype != self.dtype:
            raise TypeError(f"{self.source}: x: expected dtype {self.dtype}, found {x.dtype}; "
                            f"convert with x.astype(np.{self.dtype})")
        if x.shape[0] < 1:
            raise ValueError(f"{self.source}: x: expected at least one image, found shape {x.shape}")
        return np.ascontiguousarray(x)

    # -- fast path
    def _layer_fast(self, x, layer, relu, residual=None, residual_stride=1, residual_offset=0):
        if layer.ternary:
            return ternary_conv2d(x, self._plan(layer), layer.stride, layer.padding, relu, residual,
                                  residual_stride, residual_offset)
        # a full-precision layer (keep_first): the fast backend's dense convolution
        out, _ = fast_ops.conv2d_forward(x, layer.dense_weight, None, layer.stride, layer.padding)
        return _affine_residual_relu(out, layer, relu, residual, residual_stride, residual_offset)

    def forward(self, x):
        """x: (N, C, H, W) normalised images in ``dtype`` -> logits (N, num_classes).
        Add-only ternary kernels (``tqref.kernels.ternary_engine``)."""
        h = self._check_input(x)
        h = self._layer_fast(h, self.layers[0], relu=True)
        for b, block in enumerate(self.blocks):
            conv_a, conv_b = self.layers[1 + 2 * b], self.layers[2 + 2 * b]
            u = self._layer_fast(h, conv_a, relu=True)
            stride, offset = _shortcut(block)
            h = self._layer_fast(u, conv_b, relu=True, residual=h, residual_stride=stride, residual_offset=offset)
        linear = self.layers[-1]
        area = h.shape[2] * h.shape[3]
        pooled = h.sum(axis=(2, 3))  # (N, D): additions only; the 1/(H·W) goes into the scales
        if linear.ternary:
            plan = self._plan(linear)
            plan = plan._replace(scales=(plan.scales * (1.0 / area)).astype(plan.scales.dtype))
            return ternary_conv2d(pooled[:, :, None, None], plan, 1, 0).reshape(pooled.shape[0], -1)
        out, _ = F.linear_forward(pooled * pooled.dtype.type(1.0 / area), linear.dense_weight, None)
        return out * linear.scale + linear.shift

    # -- naive twin: public dense operations only
    def _layer_naive(self, x, layer, relu, residual=None, shortcut=None):
        if layer.ternary:
            codes, scales = groups(layer.codes, layer.alpha, layer.scale, self.form)
            out = 0
            for g in range(codes.shape[0]):
                t = codes[g].astype(x.dtype)  # the decoded ±1 weights
                conv = (F.conv2d_forward(x, t, None, layer.stride, layer.padding)[0] if layer.kind == "conv"
                        else F.linear_forward(x, t, None)[0])
                s = scales[g].astype(x.dtype)
                out = out + conv * (s[:, None, None] if layer.kind == "conv" else s)
            shift = layer.shift
        else:
            out = (F.conv2d_forward(x, layer.dense_weight, None, layer.stride, layer.padding)[0]
                   if layer.kind == "conv" else F.linear_forward(x, layer.dense_weight, None)[0])
            s = layer.scale
            out = out * (s[:, None, None] if layer.kind == "conv" else s)
            shift = layer.shift
        out = out + (shift[:, None, None] if layer.kind == "conv" else shift)
        if residual is not None:
            skip = residual if shortcut == "identity" else \
                F.option_a_shortcut_forward(residual, out.shape[1])[0]
            out = F.add_forward(out, skip)[0]
        return F.relu_forward(out)[0] if relu else out

    def forward_naive(self, x):
        """The twin of ``forward`` from tqref.functional's dense operations
        (module docstring); same input and output."""
        h = self._check_input(x)
        h = self._layer_naive(h, self.layers[0], relu=True)
        for b, block in enumerate(self.blocks):
            u = self._layer_naive(h, self.layers[1 + 2 * b], relu=True)
            h = self._layer_naive(u, self.layers[2 + 2 * b], relu=True, residual=h, shortcut=block["shortcut"])
        pooled, _ = F.global_avg_pool_forward(h)
        return self._layer_naive(pooled, self.layers[-1], relu=False)

    # -- counting
    def operation_counts(self, input_hw=(32, 32)):
        """Operations of ``forward`` per image of size ``input_hw``: a dict with
        totals and a per-layer list.

            adds            ternary accumulation: one add/subtract per non-zero code and output pixel
            skipped         zero codes (of W_eff) times output pixels: work not done
            multiplies      scale multiplies (one per output value and group) + dense layers' MACs
            other_adds      combining groups, bias, residual, global pool, dense layers' MACs
            dense_macs      what the same network costs as full-precision MACs
        """
        H, W = int(input_hw[0]), int(input_hw[1])
        per_layer, shapes = [], {}
        h, w = H, W
        for i, layer in enumerate(self.layers):
            if layer.kind == "conv":
                _, _, HH, WW = layer.weight_shape
                h = (h + 2 * layer.padding - HH) // layer.stride + 1
                w = (w + 2 * layer.padding - WW) // layer.stride + 1
                out_hw = (h, w)
            else:
                out_hw = (1, 1)
            shapes[layer.name] = out_hw
            positions, F_out = out_hw[0] * out_hw[1], layer.weight_shape[0]
            macs = positions * int(np.prod(layer.weight_shape))
            if layer.ternary:
                c = plan_operation_counts(self._plan(layer), out_hw)
                entry = {"adds": c["adds"], "skipped": c["skipped"], "multiplies": c["multiplies"],
                         "other_adds": c["epilogue_adds"] + F_out * positions}
            else:
                entry = {"adds": 0, "skipped": 0, "multiplies": macs + F_out * positions,
                         "other_adds": macs + F_out * positions}
            entry.update(name=layer.name, ternary=layer.ternary, dense_macs=macs, output_hw=list(out_hw))
            per_layer.append(entry)
        # the residual adds (the input's channels only: option A's padded channels add nothing)
        # and the global pool's sum over the last feature map
        for b, block in enumerate(self.blocks):
            oh, ow = shapes[self.layers[2 + 2 * b].name]
            per_layer[2 + 2 * b]["other_adds"] += block["in"] * oh * ow
        per_layer[-1]["other_adds"] += self.layers[-1].weight_shape[1] * (h * w - 1)
        totals = {key: sum(e[key] for e in per_layer)
                  for key in ("adds", "skipped", "multiplies", "other_adds", "dense_macs")}
        totals["skipped_fraction"] = totals["skipped"] / totals["dense_macs"] if totals["dense_macs"] else None
        return {"input_hw": [H, W], "form": self.form, "totals": totals, "layers": per_layer}


def _shortcut(block):
    """(residual_stride, residual_offset) of a block's shortcut for ``ternary_conv2d``."""
    if block["shortcut"] == "identity":
        return 1, 0
    return 2, (block["out"] - block["in"]) // 2  # option A: every second pixel, channels padded both sides


def _affine_residual_relu(out, layer, relu, residual, residual_stride, residual_offset):
    """The epilogue of a full-precision layer: g ⊙ out + c (+ shortcut), ReLU."""
    out = out * layer.scale[:, None, None] + layer.shift[:, None, None]
    if residual is not None:
        sub = residual[:, :, ::residual_stride, ::residual_stride]
        out[:, residual_offset:residual_offset + sub.shape[1]] += sub
    return np.maximum(out, 0) if relu else out


def _layer_entry(layer):
    """The architecture's description of one layer (JSON-ready)."""
    return {"name": layer.name, "kind": layer.kind, "shape": list(layer.weight_shape), "stride": layer.stride,
            "padding": layer.padding, "t_ex": layer.t_ex, "per_channel": bool(layer.per_channel)}


__all__ = ["PackedModel", "model_layout", "check_layers", "FoldedLayer"]
