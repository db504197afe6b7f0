"""Model summary: per layer, parameters, bits, Δ/α, sparsity, operations and sizes.

    from tqref.summary import model_summary
    summary = model_summary(model, input_shape=(1, 3, 32, 32))
    print(summary)                     # aligned tables and a totals block
    summary.layers[0]["expansions"]    # Δ_k, α_k, sparsity_k, adds_k of the first layer
    summary.totals["compression_ratio"]
    summary.to_json(indent=2)

Like Larq's summary, but it also counts what ternary weights save: zero codes
(skipped work), the α overhead and the adds that replace multiplies
(``docs/method.md``, "Compression and sparsity").

One forward pass of zeros (shape ``input_shape``, evaluation mode) records
each Conv2d/Linear's output shape; the layers are listed in the order that
pass calls them.  All counts are *per image* (N = 1), whatever input_shape[0].

Per layer, weight W (F, C, HH, WW) or (F, D), output (F, H', W') or (F,):

    weight size per output  K = C·HH·WW (conv)   or  D (linear)
    output values           P = F·H'·W'          or  F
    MACs                    = P·K = H'·W'·|W|                     (dense, full precision)

A quantized layer with t_ex expansions, codes T_k and scales α_k (Eqs. 3, 5):

    sparsity_k   = #{i : T_k,i = 0} / |W|
    adds_k       = H'·W'·#{i : T_k,i ≠ 0}     one add/subtract per nonzero code
    adds         = Σ_k adds_k                  the paper's expansion layer runs t_ex
                                               ternary convolutions
    sparsity     = #{i : W_eff,i = 0} / |W|    W_eff = Σ_k α_k T_k: a position is
                                               skipped only when W_eff is 0 there
    adds_merged  = H'·W'·#{i : W_eff,i ≠ 0}    one convolution with W_eff
    skipped      = H'·W'·#{i : W_eff,i = 0} = MACs − adds_merged
    multiplies   = t_ex·P                      one multiply by α_k per output value
                                               and expansion
A full-precision layer: adds = skipped = 0, multiplies = MACs.

Storage in bytes (b the bias, bits = 2·t_ex, or the layer's ``bits_per_weight``):

    fp32         4·|W| + 4·|b|
    ternary      ⌈bits·|W| / 8⌉ + 4·(number of α values over all expansions) + 4·|b|
                 (one α per expansion, F of them with per_channel; a
                 full-precision layer keeps its fp32 size)

Totals.  Every parameter that is not a quantized weight (biases, BatchNorm
γ and β, full-precision layers) stays fp32, as in the paper.  BatchNorm's
running mean and variance are buffers and are not counted: at deployment
they fold with γ, β into one scale and one shift per channel, the two numbers
per channel that γ, β already count.  A quantized layer's parameters other
than weight and bias (TTQ's trained W_p, W_n) are its scales: stored once, as
the α that ``quantize()`` reports, and absent from the full-precision network
(``to_full_precision`` drops them), so they are not counted again.

    fp32 size                        = 4 · (all parameters − scale parameters)
    ternary size                     = Σ (code + α bytes) + 4 · (all other parameters)
    compression                      = fp32 size / ternary size
    compression of quantized weights = 4·Σ|W| / Σ (code + α bytes)   (quantized layers only)
    sparsity                         = Σ #{W_eff = 0} / Σ|W|           (quantized layers only)
    operation reduction              = MACs / (adds + multiplies)      (a dense MAC counts as one
                                                                       operation, as does an add)
    skipped fraction                 = skipped / MACs

Sizes print in decimal units: 1 KB = 1,000 bytes, 1 MB = 1,000,000 bytes.
"""

import json
import math

import numpy as np

from tqref.io import to_json_value
from tqref.nn.layers import BatchNorm2d, Conv2d, Linear
from tqref.nn.module import Module
from tqref.ternary.convert import is_quantized_layer

FP32_BYTES = 4
FP32_BITS = 32
_MISSING = object()


# ---------------------------------------------------------------- result
class ModelSummary:
    """The result of ``model_summary``.

    layers:      list of dicts, one per Conv2d/Linear in forward order (keys in
                 ``model_summary``'s docstring)
    totals:      dict of whole-model figures
    input_shape: the shape of the forward pass that measured the outputs
    notes:       list of strings that the text table prints under the totals
    """

    def __init__(self, layers, totals, input_shape, notes):
        self.layers = layers
        self.totals = totals
        self.input_shape = tuple(input_shape)
        self.notes = list(notes)

    def to_dict(self):
        """Plain Python (dict, list, int, float, str, bool, None): ``json.dumps`` takes it."""
        return to_json_value({"input_shape": list(self.input_shape), "layers": self.layers,
                              "totals": self.totals, "notes": self.notes})

    def to_json(self, indent=2):
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)

    def to_text(self):
        """Two aligned tables (layers; operations per image) and a totals block."""
        return _render_text(self)

    def __str__(self):
        return self.to_text()

    def __repr__(self):
        t = self.totals
        return (f"ModelSummary({t['layers']} layers, {t['parameters']:,} parameters, "
                f"compression {t['compression_ratio']:.2f}x, MACs {t['macs']:,})")


# ---------------------------------------------------------------- entry point
def model_summary(model, input_shape=(1, 3, 32, 32)):
    """Summarise every Conv2d/Linear of ``model`` (full precision or quantized).

    model:        a tqref Module
    input_shape:  (N, C, H, W) (or (N, D) for a model that starts with Linear);
                  one forward pass of zeros of this shape, in evaluation mode,
                  measures each layer's output.  The model's train/eval modes,
                  parameters, buffers and cached activations are left as they were.

    Returns a ``ModelSummary``.  Each entry of ``.layers`` holds:

        name, type, quantized, weight_shape, output_shape (first call, batch included),
        weights, biases, params (= weights + biases), scale_params (other parameters of
        the layer, e.g. TTQ's W_p, W_n), bits_per_weight (32 or 2·t_ex),
        t_ex, expansions (per expansion k: delta_factor, threshold Δ_k, alpha α_k
          -- the mean when per channel -- threshold_count, alpha_count, zeros,
          nonzero, sparsity, adds, skipped), sparsity and zeros of W_eff,
        macs, adds, adds_merged, skipped, multiplies,
        fp32_bytes, ternary_bytes, code_bytes, alpha_bytes, bias_bytes, calls.
    Full-precision layers have t_ex, sparsity, zeros None and no expansions.
    """
    if not isinstance(model, Module):
        raise TypeError(f"model_summary: model: expected a tqref Module, got {type(model).__name__}")
    input_shape = _check_input_shape(input_shape)
    named = [(name, m) for name, m in model.named_modules() if isinstance(m, (Conv2d, Linear))]
    if not named:
        raise ValueError(f"model_summary: model: expected at least one Conv2d or Linear layer, "
                         f"found none in {model.describe()}")

    calls, order = _record_output_shapes(model, [m for _, m in named], input_shape)

    rank = {key: i for i, key in enumerate(order)}
    # layers the forward pass never called go last, in registration order
    named.sort(key=lambda item: rank.get(id(item[1]), len(rank)))
    layers = [_layer_entry(name or type(m).__name__, m, calls[id(m)]) for name, m in named]
    totals = _totals(model, layers)
    return ModelSummary(layers, totals, input_shape, _notes(model, layers, totals))


def _check_input_shape(input_shape):
    shape = tuple(input_shape) if isinstance(input_shape, (tuple, list)) else None
    if not shape or len(shape) < 2 or not all(
            isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s > 0 for s in shape):
        raise ValueError(f"model_summary: input_shape: expected a tuple of positive ints such as "
                         f"(1, 3, 32, 32), got {input_shape!r}")
    return tuple(int(s) for s in shape)


# ---------------------------------------------------------------- the measuring pass
def _record_output_shapes(model, layers, input_shape):
    """Run ``model.forward(zeros(input_shape))`` in eval mode with each layer's
    ``forward`` wrapped on the instance; returns ({id(layer): [output shapes]},
    [id(layer) in first-call order]).  Everything it touches is put back in the
    ``finally``: modes, the instance ``forward`` attributes, and the activation
    caches (the pass must neither leave zeros' caches behind nor clobber a
    cache that a pending ``backward`` still needs)."""
    calls = {id(layer): [] for layer in layers}
    order = []
    modules = [m for _, m in model.named_modules()]
    saved_modes = [(m, m.training) for m in modules]
    saved_caches = [(m, {k: v for k, v in vars(m).items() if k.endswith("_cache")}) for m in modules]
    saved_forwards = []
    try:
        for layer in layers:
            saved_forwards.append((layer, layer.__dict__.get("forward", _MISSING)))
            object.__setattr__(layer, "forward", _recording(layer, layer.forward, calls, order))
        # eval: BatchNorm must not fold the zeros into its running statistics
        model.eval()
        x = np.zeros(input_shape, dtype=model.dtype)
        try:
            model.forward(x)
        except (ValueError, TypeError) as err:
            raise ValueError(f"model_summary: input_shape: a forward pass of zeros of shape "
                             f"{input_shape} failed: {err}") from err
    finally:
        for layer, own in saved_forwards:
            if own is _MISSING:
                layer.__dict__.pop("forward", None)
            else:
                object.__setattr__(layer, "forward", own)
        for m, mode in saved_modes:
            m.training = mode
        for m, caches in saved_caches:
            for key in [k for k in vars(m) if k.endswith("_cache") and k not in caches]:
                object.__delattr__(m, key)
            for key, value in caches.items():
                object.__setattr__(m, key, value)
    return calls, order


def _recording(layer, forward, calls, order):
    key = id(layer)

    def forward_and_record(x):
        out = forward(x)
        if not calls[key]:
            order.append(key)
        calls[key].append(tuple(int(s) for s in out.shape))
        return out

    return forward_and_record


# ---------------------------------------------------------------- one layer
def _layer_entry(name, layer, output_shapes):
    weight = layer.params["weight"]
    bias = layer.params.get("bias")
    n_weights, n_bias = int(weight.size), 0 if bias is None else int(bias.size)
    n_out = int(weight.shape[0])
    # H'·W' per image, summed over calls (a layer run twice does its work twice)
    positions = sum(math.prod(shape[2:]) for shape in output_shapes)
    macs = positions * n_weights
    outputs = positions * n_out
    entry = {
        "name": name, "type": type(layer).__name__, "quantized": bool(is_quantized_layer(layer)),
        "weight_shape": list(weight.shape),
        "output_shape": list(output_shapes[0]) if output_shapes else None,
        "calls": len(output_shapes),
        "weights": n_weights, "biases": n_bias, "params": n_weights + n_bias,
        # a quantized layer's other parameters are trained scales (TTQ's W_p, W_n)
        "scale_params": sum(int(p.size) for key, p in layer.params.items()
                            if key not in ("weight", "bias")),
    }
    fp32_bytes = FP32_BYTES * (n_weights + n_bias)
    if not entry["quantized"]:
        entry.update(bits_per_weight=FP32_BITS, t_ex=None, expansions=[], sparsity=None, zeros=None,
                     macs=macs, adds=0, adds_merged=0, skipped=0, multiplies=macs,
                     fp32_bytes=fp32_bytes, ternary_bytes=fp32_bytes, code_bytes=0, alpha_bytes=0,
                     bias_bytes=FP32_BYTES * n_bias)
        return entry

    expansions = list(layer.quantize())
    t_ex = int(getattr(layer, "t_ex", len(expansions)))
    bits = getattr(layer, "bits_per_weight", None)
    bits = 2 * t_ex if bits is None else bits
    factors = getattr(layer, "delta_factors", None)
    per_expansion = []
    for k, ternarized in enumerate(expansions):
        nonzero = int(np.count_nonzero(ternarized.codes))
        alpha_values = np.atleast_1d(np.asarray(ternarized.alpha, dtype=np.float64))
        threshold = getattr(ternarized, "threshold", None)
        threshold_values = None if threshold is None else np.atleast_1d(np.asarray(threshold, np.float64))
        per_expansion.append({
            "k": k + 1,
            "delta_factor": None if factors is None else float(factors[k]),
            "threshold": None if threshold_values is None else float(threshold_values.mean()),
            "threshold_count": None if threshold_values is None else int(threshold_values.size),
            "alpha": float(alpha_values.mean()), "alpha_count": int(alpha_values.size),
            "zeros": n_weights - nonzero, "nonzero": nonzero,
            "sparsity": (n_weights - nonzero) / n_weights,
            "adds": positions * nonzero, "skipped": positions * (n_weights - nonzero),
        })
    # W_eff as the forward pass uses it (the generic hook, so variants are measured as they run)
    merged_nonzero = int(np.count_nonzero(layer.weight_for_forward()))
    code_bytes = math.ceil(bits * n_weights / 8)
    alpha_bytes = FP32_BYTES * sum(e["alpha_count"] for e in per_expansion)
    bias_bytes = FP32_BYTES * n_bias
    entry.update(
        bits_per_weight=bits, t_ex=t_ex, expansions=per_expansion,
        sparsity=(n_weights - merged_nonzero) / n_weights, zeros=n_weights - merged_nonzero,
        macs=macs, adds=sum(e["adds"] for e in per_expansion), adds_merged=positions * merged_nonzero,
        skipped=positions * (n_weights - merged_nonzero), multiplies=len(expansions) * outputs,
        fp32_bytes=fp32_bytes, ternary_bytes=code_bytes + alpha_bytes + bias_bytes,
        code_bytes=code_bytes, alpha_bytes=alpha_bytes, bias_bytes=bias_bytes,
    )
    return entry


# ---------------------------------------------------------------- totals
def _ratio(numerator, denominator):
    return numerator / denominator if denominator else None


def _totals(model, layers):
    parameters = int(model.num_parameters())
    bn_parameters = sum(int(p.size) for _, m in model.named_modules() if isinstance(m, BatchNorm2d)
                        for p in m.params.values())
    quantized = [e for e in layers if e["quantized"]]
    q_weights = sum(e["weights"] for e in quantized)
    q_bytes = sum(e["code_bytes"] + e["alpha_bytes"] for e in quantized)
    q_zeros = sum(e["zeros"] for e in quantized)
    scale_params = sum(e["scale_params"] for e in quantized)  # stored as α, in q_bytes
    fp32_bytes = FP32_BYTES * (parameters - scale_params)
    # everything else stays fp32 (biases, BN γ/β, full-precision layers, ...)
    fp32_parameters = parameters - q_weights - scale_params
    ternary_bytes = q_bytes + FP32_BYTES * fp32_parameters
    macs = sum(e["macs"] for e in layers)
    adds = sum(e["adds"] for e in layers)
    multiplies = sum(e["multiplies"] for e in layers)
    skipped = sum(e["skipped"] for e in layers)
    return {
        "layers": len(layers),
        "quantized_layers": len(quantized),
        "parameters": parameters,
        "quantized_weights": q_weights,
        "scale_parameters": scale_params,
        "fp32_parameters": fp32_parameters,
        "batchnorm_parameters": bn_parameters,
        "fp32_bytes": fp32_bytes,
        "ternary_bytes": ternary_bytes,
        "code_bytes": sum(e["code_bytes"] for e in quantized),
        "alpha_bytes": sum(e["alpha_bytes"] for e in quantized),
        "compression_ratio": fp32_bytes / ternary_bytes,
        "quantized_weight_fp32_bytes": FP32_BYTES * q_weights,
        "quantized_weight_bytes": q_bytes,
        "quantized_weight_compression_ratio": _ratio(FP32_BYTES * q_weights, q_bytes),
        "sparsity": _ratio(q_zeros, q_weights),
        "zeros": q_zeros,
        "macs": macs,
        "adds": adds,
        "adds_merged": sum(e["adds_merged"] for e in layers),
        "skipped": skipped,
        "multiplies": multiplies,
        "operations": adds + multiplies,
        "operation_reduction": _ratio(macs, adds + multiplies),
        "skipped_fraction": _ratio(skipped, macs),
    }


def _notes(model, layers, totals):
    notes = [
        "Counts are per image (N = 1); a dense MAC, an add and a multiply each count as one operation.",
        f"Parameters that are not quantized weights stay fp32 ({totals['fp32_parameters']:,}, "
        f"of which BatchNorm γ/β {totals['batchnorm_parameters']:,}), as in the paper; "
        f"BN running mean/var are buffers, not counted.",
        "1 KB = 1,000 bytes, 1 MB = 1,000,000 bytes.",
    ]
    if any(e["t_ex"] and e["t_ex"] > 1 for e in layers):
        notes.append("t_ex > 1: 'adds' counts each expansion's convolution; 'adds W_eff' one "
                     "convolution with W_eff = Σ α_k T_k; skipped = positions where W_eff = 0.")
    if any(e["alpha_count"] > 1 for layer in layers for e in layer["expansions"]):
        notes.append("*: several Δ or α values in the layer (per channel, or TTQ's W_p, W_n): "
                     "their mean is shown.")
    missing = [e["name"] for e in layers if not e["calls"]]
    if missing:
        notes.append(f"Not called by the forward pass (no operations counted): {', '.join(missing)}.")
    return notes


# ---------------------------------------------------------------- text
def _bytes(n):
    if n < 1_000:
        return f"{n:,} B"
    if n < 1_000_000:
        return f"{n / 1e3:,.2f} KB"
    return f"{n / 1e6:,.2f} MB"


def _shape(shape, drop_batch=False):
    if shape is None:
        return "-"
    return "×".join(str(s) for s in (shape[1:] if drop_batch else shape))


def _small(value, count):
    if value is None:
        return "-"
    return f"{value:.4g}" + ("*" if count and count > 1 else "")


def _percent(fraction):
    return "-" if fraction is None else f"{100 * fraction:.1f}%"


def _table(headers, rows, right):
    """Left-align text columns, right-align numeric ones (``right``: set of column indices)."""
    widths = [max(len(str(r[i])) for r in [headers] + rows) for i in range(len(headers))]

    def line(cells):
        return "  ".join(str(c).rjust(w) if i in right else str(c).ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    rule = "─" * len(line(headers))
    return [line(headers), rule] + [line(r) for r in rows]


def _render_text(summary):
    layer_rows, op_rows = [], []
    for e in summary.layers:
        first = e["expansions"][0] if e["expansions"] else {}
        layer_rows.append([
            e["name"], e["type"], _shape(e["weight_shape"]), _shape(e["output_shape"], drop_batch=True),
            f"{e['params']:,}", f"{e['bits_per_weight']:g}",
            _small(first.get("threshold"), first.get("threshold_count")),
            _small(first.get("alpha"), first.get("alpha_count")),
            _percent(e["sparsity"]), _bytes(e["fp32_bytes"]), _bytes(e["ternary_bytes"]),
        ])
        # one extra row per further expansion: its Δ_k, α_k and code sparsity
        for x in e["expansions"][1:] if len(e["expansions"]) > 1 else []:
            layer_rows.append([f"  └ expansion {x['k']}", "", "", "", "", "",
                               _small(x["threshold"], x["threshold_count"]),
                               _small(x["alpha"], x["alpha_count"]), _percent(x["sparsity"]), "", ""])
        op_rows.append([
            e["name"], f"{e['macs']:,}", f"{e['adds']:,}", f"{e['adds_merged']:,}",
            f"{e['skipped']:,}", f"{e['multiplies']:,}",
            _percent(e["skipped"] / e["macs"] if e["macs"] else None),
        ])
    t = summary.totals
    op_rows.append(["total", f"{t['macs']:,}", f"{t['adds']:,}", f"{t['adds_merged']:,}",
                    f"{t['skipped']:,}", f"{t['multiplies']:,}", _percent(t["skipped_fraction"])])
    layer_table = _table(["layer", "type", "weight", "output", "params", "bits", "Δ", "α",
                          "sparsity", "fp32", "ternary"], layer_rows, right={4, 5, 6, 7, 8, 9, 10})
    op_table = _table(["layer", "MACs", "adds", "adds W_eff", "skipped", "multiplies", "skip %"],
                      op_rows, right={1, 2, 3, 4, 5, 6})
    op_table.insert(-1, "─" * len(op_table[1]))

    def ratio(r):
        return "-" if r is None else f"{r:.2f}×"

    q_part = (f"; quantized weights {ratio(t['quantized_weight_compression_ratio'])} "
              f"({_bytes(t['quantized_weight_fp32_bytes'])} → {_bytes(t['quantized_weight_bytes'])}, "
              f"α {_bytes(t['alpha_bytes'])})") if t["quantized_layers"] else ""
    totals = [
        f"Totals ({t['layers']} Conv2d/Linear layers, {t['quantized_layers']} quantized; "
        f"input {_shape(list(summary.input_shape))})",
        f"  parameters           {t['parameters']:,} ({t['quantized_weights']:,} quantized weights, "
        f"{t['fp32_parameters']:,} at fp32 incl. BatchNorm {t['batchnorm_parameters']:,}"
        + (f", {t['scale_parameters']:,} trained scales stored as α" if t["scale_parameters"] else "") + ")",
        f"  size fp32            {_bytes(t['fp32_bytes'])} ({t['fp32_bytes']:,} bytes)",
        f"  size ternary         {_bytes(t['ternary_bytes'])} ({t['ternary_bytes']:,} bytes)",
        f"  compression          {ratio(t['compression_ratio'])} whole model{q_part}",
        f"  sparsity             {_percent(t['sparsity'])} of quantized weights are zero"
        if t["sparsity"] is not None else "  sparsity             - (no quantized layer)",
        f"  MACs per image       {t['macs']:,}",
        f"  adds / subtracts     {t['adds']:,} ({t['adds_merged']:,} with W_eff merged)",
        f"  skipped zeros        {t['skipped']:,} ({_percent(t['skipped_fraction'])} of MACs)",
        f"  multiplies           {t['multiplies']:,}",
        f"  operation reduction  {ratio(t['operation_reduction'])} (MACs / (adds + multiplies))",
    ]
    lines = ["Layers"] + layer_table + ["", "Operations per image"] + op_table + [""] + totals
    lines += [""] + [f"Note: {n}" for n in summary.notes]
    return "\n".join(lines)
