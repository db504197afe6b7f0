"""model_summary: parameter, size, sparsity and operation counts, checked against
hand-made layers (exact codes) and against counts made here independently."""

import json
import math

import numpy as np
import pytest

from tqref import nn
from tqref.models import resnet20
from tqref.summary import ModelSummary, model_summary
from tqref.ternary import ternarize_model

RESNET20_PARAMS = 269_722
RESNET20_MACS = 40_551_040          # ../shared/docs/performance.md
RESNET20_OUTPUT_VALUES = 188_426    # Σ F·H'·W': 16·32² ·7 + 32·16² ·6 + 64·8² ·6 + 10


# ------------------------------------------------------------ helpers
def _weighted(model):
    return [m for _, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def _expected_sizes(model, t_ex):
    """Whole-model and quantized-weight compression, counted from the model's
    arrays without the summary: codes at 2·t_ex bits (rounded up per layer),
    one fp32 α per layer per expansion, everything else fp32."""
    bn = sum(p.size for _, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)
             for p in m.params.values())
    layers = _weighted(model)
    weights = sum(m.params["weight"].size for m in layers)
    biases = sum(m.params["bias"].size for m in layers if "bias" in m.params)
    total = model.num_parameters()
    assert total == weights + biases + bn  # nothing else in a CIFAR ResNet
    codes = sum(math.ceil(2 * t_ex * m.params["weight"].size / 8) for m in layers)
    alphas = 4 * t_ex * len(layers)
    return {"fp32": 4 * total, "ternary": codes + alphas + 4 * (biases + bn),
            "quantized": 4 * weights / (codes + alphas),
            "whole": 4 * total / (codes + alphas + 4 * (biases + bn)), "bn": bn, "weights": weights}


def _hand_model():
    """conv 1→2, 2×2 (with bias) → global average pool → linear 2→3 (with bias).

    conv:   max|W| = 1,   Δ₁ = 0.05, Δ₂ = 0.10
            T₁ = f0 [+1, 0, −1, 0], f1 [+1, 0, +1, −1]   (5 nonzero, 3 zero)
            T₂ = f0 [+1, 0, −1, 0], f1 [+1, 0,  0, −1]   (4 nonzero, 4 zero)
            α₁ = (1 + .5 + .2 + .06 + .3)/5 = 0.412,  α₂ = (1 + .5 + .2 + .3)/4 = 0.5
            input 1×3×3 → output 2×2×2: H'·W' = 4, MACs = 4·8 = 32
    linear: max|W| = 0.9, Δ₁ = 0.045, Δ₂ = 0.09: T = [[+1, 0], [0, −1], [+1, 0]] for both
            α = (.9 + .9 + .5)/3, MACs = 6, 6 codes of 2 bits = 12 bits → 2 bytes (rounded up)
    """
    model = nn.Sequential(nn.Conv2d(1, 2, 2, bias=True, rng=0), nn.GlobalAvgPool2d(),
                          nn.Linear(2, 3, rng=1))
    model[0].params["weight"][...] = np.array([[1.0, 0.01, -0.5, 0.0],
                                               [0.2, -0.04, 0.06, -0.3]]).reshape(2, 1, 2, 2)
    model[2].params["weight"][...] = [[0.9, 0.02], [-0.03, -0.9], [0.5, 0.0]]
    return model


HAND_INPUT = (1, 1, 3, 3)


@pytest.fixture(scope="module")
def fp_summary():
    return model_summary(resnet20(seed=0))


# ------------------------------------------------------------ ResNet-20, full precision
def test_resnet20_full_precision_totals(fp_summary):
    t = fp_summary.totals
    assert t["parameters"] == RESNET20_PARAMS
    assert t["fp32_bytes"] == t["ternary_bytes"] == RESNET20_PARAMS * 4
    assert t["compression_ratio"] == 1.0
    assert t["macs"] == RESNET20_MACS
    assert t["multiplies"] == RESNET20_MACS and t["adds"] == 0 and t["skipped"] == 0
    assert t["operation_reduction"] == 1.0 and t["skipped_fraction"] == 0.0
    assert t["quantized_layers"] == 0 and t["sparsity"] is None
    assert t["quantized_weight_compression_ratio"] is None
    assert t["batchnorm_parameters"] == 2 * (16 + 6 * 16 + 6 * 32 + 6 * 64)


def test_resnet20_layers_in_forward_order_with_output_shapes(fp_summary):
    names = [e["name"] for e in fp_summary.layers]
    assert len(names) == 20 and names[0] == "conv1" and names[-1] == "linear"
    assert names[1:3] == ["layer1.0.conv1", "layer1.0.conv2"]
    by_name = {e["name"]: e for e in fp_summary.layers}
    assert by_name["layer2.0.conv1"]["output_shape"] == [1, 32, 16, 16]
    assert by_name["layer3.2.conv2"]["output_shape"] == [1, 64, 8, 8]
    assert by_name["linear"]["output_shape"] == [1, 10]
    assert by_name["linear"]["params"] == 650 and by_name["linear"]["bits_per_weight"] == 32
    # MACs = H'·W'·|W| per layer, recomputed here from the recorded shapes
    for e in fp_summary.layers:
        assert e["macs"] == math.prod(e["output_shape"][2:]) * math.prod(e["weight_shape"])
    assert by_name["conv1"]["macs"] == 32 * 32 * 16 * 27


# ------------------------------------------------------------ ResNet-20, ternarized
@pytest.mark.parametrize("t_ex, quantized_ratio, whole_range", [(1, 16, (12, 16)), (2, 8, (7, 8))])
def test_resnet20_ternary_compression(t_ex, quantized_ratio, whole_range):
    model = ternarize_model(resnet20(seed=0), t_ex=t_ex)
    s = model_summary(model)
    t = s.totals
    expected = _expected_sizes(model, t_ex)
    assert t["fp32_bytes"] == expected["fp32"]
    assert t["ternary_bytes"] == expected["ternary"]
    assert t["quantized_weights"] == expected["weights"] == 268_336
    assert t["batchnorm_parameters"] == expected["bn"] == 1_376
    assert t["quantized_weight_compression_ratio"] == pytest.approx(expected["quantized"], rel=1e-12)
    assert t["compression_ratio"] == pytest.approx(expected["whole"], rel=1e-12)
    # 2·t_ex bits against 32, less the α overhead (20 layers · t_ex · 4 bytes)
    assert quantized_ratio * 0.995 < t["quantized_weight_compression_ratio"] < quantized_ratio
    assert whole_range[0] < t["compression_ratio"] < whole_range[1]
    assert t["alpha_bytes"] == 4 * t_ex * 20
    assert t["macs"] == RESNET20_MACS
    assert t["multiplies"] == t_ex * RESNET20_OUTPUT_VALUES
    assert t["adds_merged"] + t["skipped"] == RESNET20_MACS
    assert t["operation_reduction"] == pytest.approx(RESNET20_MACS / (t["adds"] + t["multiplies"]))


def test_resnet20_ternary_sparsity_matches_threshold_count():
    model = ternarize_model(resnet20(seed=0), t_ex=1)
    s = model_summary(model)
    zeros_total, skipped_total = 0, 0
    for e, layer in zip(s.layers, _weighted(model)):  # ResNet-20 runs its layers in registration order
        w = layer.params["weight"].astype(np.float64)
        zeros = int(np.sum(np.abs(w) < 0.05 * np.abs(w).max()))  # Eq. (1), (3)
        positions = math.prod(e["output_shape"][2:])
        assert e["zeros"] == e["expansions"][0]["zeros"] == zeros
        assert e["skipped"] == positions * zeros
        assert e["adds"] == e["adds_merged"] == positions * (w.size - zeros)
        zeros_total, skipped_total = zeros_total + zeros, skipped_total + positions * zeros
    assert s.totals["sparsity"] == pytest.approx(zeros_total / 268_336)
    assert s.totals["skipped"] == skipped_total
    assert 0.05 < s.totals["sparsity"] < 0.5  # He init, Δ = 0.05·max|W| ≈ 0.2σ


def test_partially_quantized_model_keeps_first_layer_fp32():
    model = ternarize_model(resnet20(seed=0), keep_first=True)
    s = model_summary(model)
    first = s.layers[0]
    assert first["name"] == "conv1" and not first["quantized"] and first["bits_per_weight"] == 32
    assert first["ternary_bytes"] == first["fp32_bytes"] == 432 * 4
    assert first["multiplies"] == first["macs"] and first["adds"] == first["skipped"] == 0
    t = s.totals
    assert t["quantized_layers"] == 19 and t["quantized_weights"] == 268_336 - 432
    codes = sum(math.ceil(2 * e["weights"] / 8) for e in s.layers[1:])
    assert t["ternary_bytes"] == codes + 19 * 4 + 4 * (RESNET20_PARAMS - t["quantized_weights"])


# ------------------------------------------------------------ hand-made layers, exact counts
def test_hand_model_exact_counts_t_ex_1():
    s = model_summary(ternarize_model(_hand_model()), input_shape=HAND_INPUT)
    conv, linear = s.layers
    assert (conv["name"], conv["type"], linear["name"]) == ("0", "TernaryConv2d", "2")
    assert conv["output_shape"] == [1, 2, 2, 2] and linear["output_shape"] == [1, 3]
    assert conv["params"] == 10 and conv["bits_per_weight"] == 2 and conv["t_ex"] == 1
    (e,) = conv["expansions"]
    assert e["threshold"] == pytest.approx(0.05) and e["alpha"] == pytest.approx(0.412)
    assert (e["zeros"], e["nonzero"], e["alpha_count"]) == (3, 5, 1)
    assert conv["sparsity"] == e["sparsity"] == 3 / 8
    assert (conv["macs"], conv["adds"], conv["adds_merged"], conv["skipped"], conv["multiplies"]) == \
        (32, 20, 20, 12, 8)
    assert (conv["code_bytes"], conv["alpha_bytes"], conv["bias_bytes"]) == (2, 4, 8)
    assert (conv["fp32_bytes"], conv["ternary_bytes"]) == (40, 14)

    (e,) = linear["expansions"]
    assert e["threshold"] == pytest.approx(0.045) and e["alpha"] == pytest.approx(2.3 / 3)
    assert linear["sparsity"] == 0.5
    assert (linear["macs"], linear["adds"], linear["skipped"], linear["multiplies"]) == (6, 3, 3, 3)
    assert (linear["code_bytes"], linear["ternary_bytes"], linear["fp32_bytes"]) == (2, 18, 36)

    t = s.totals
    assert (t["parameters"], t["quantized_weights"], t["fp32_bytes"], t["ternary_bytes"]) == (19, 14, 76, 32)
    assert t["compression_ratio"] == pytest.approx(76 / 32)
    assert t["quantized_weight_compression_ratio"] == pytest.approx(56 / 12)
    assert t["sparsity"] == pytest.approx(6 / 14)
    assert (t["macs"], t["adds"], t["skipped"], t["multiplies"]) == (38, 23, 15, 11)
    assert t["operation_reduction"] == pytest.approx(38 / 34)
    assert t["skipped_fraction"] == pytest.approx(15 / 38)


def test_hand_model_t_ex_2_counts_each_expansion():
    s = model_summary(ternarize_model(_hand_model(), t_ex=2), input_shape=HAND_INPUT)
    conv, linear = s.layers
    assert conv["t_ex"] == 2 and conv["bits_per_weight"] == 4
    e1, e2 = conv["expansions"]
    assert (e1["k"], e2["k"]) == (1, 2)
    assert (e1["delta_factor"], e2["delta_factor"]) == (0.05, 0.10)
    assert e1["threshold"] == pytest.approx(0.05) and e2["threshold"] == pytest.approx(0.10)
    assert e1["alpha"] == pytest.approx(0.412) and e2["alpha"] == pytest.approx(0.5)
    assert (e1["zeros"], e2["zeros"]) == (3, 4)
    assert (e1["adds"], e2["adds"], e1["skipped"], e2["skipped"]) == (20, 16, 12, 16)
    assert conv["adds"] == 36 and conv["adds_merged"] == 20 and conv["skipped"] == 12
    # W_eff is zero only where every expansion's code is
    assert conv["zeros"] == 3 <= min(e1["zeros"], e2["zeros"])
    assert conv["multiplies"] == 2 * 8
    assert (conv["code_bytes"], conv["alpha_bytes"], conv["ternary_bytes"]) == (4, 8, 20)
    assert (linear["code_bytes"], linear["alpha_bytes"], linear["ternary_bytes"]) == (3, 8, 23)
    assert linear["adds"] == 6 and linear["multiplies"] == 6
    assert "└ expansion 2" in s.to_text()


def test_hand_model_per_channel_alpha_is_summarised():
    s = model_summary(ternarize_model(_hand_model(), per_channel=True), input_shape=HAND_INPUT)
    conv, linear = s.layers
    (e,) = conv["expansions"]
    # f0: Δ = 0.05, α = 0.75 ; f1: Δ = 0.015 (max 0.3), all four codes nonzero, α = 0.15
    assert (e["alpha_count"], e["threshold_count"]) == (2, 2)
    assert e["alpha"] == pytest.approx((0.75 + 0.15) / 2)
    assert e["threshold"] == pytest.approx((0.05 + 0.015) / 2)
    assert conv["zeros"] == 2 and conv["alpha_bytes"] == 8 and conv["ternary_bytes"] == 2 + 8 + 8
    assert linear["expansions"][0]["alpha_count"] == 3 and linear["alpha_bytes"] == 12
    assert " 0.45* " in s.to_text() and any(n.startswith("*: several") for n in s.notes)


def test_bits_per_weight_attribute_is_used():
    model = ternarize_model(_hand_model())
    model[0].bits_per_weight = 1  # how a binary variant declares itself
    conv = model_summary(model, input_shape=HAND_INPUT).layers[0]
    assert conv["bits_per_weight"] == 1 and conv["code_bytes"] == 1


def test_variants_ttq_scales_counted_once_and_binary_has_no_zeros():
    pytest.importorskip("tqref.ternary.variants")  # registers "ttq" and "binary"
    fp = _expected_sizes(resnet20(seed=0), 1)
    ttq = model_summary(ternarize_model(resnet20(seed=0), variant="ttq")).totals
    # W_p, W_n: 2 trained parameters per layer, stored once as 2 α (not again at fp32),
    # and not part of the full-precision network
    assert ttq["parameters"] == RESNET20_PARAMS + 40 and ttq["scale_parameters"] == 40
    assert ttq["fp32_bytes"] == RESNET20_PARAMS * 4
    assert ttq["ternary_bytes"] == fp["ternary"] + 4 * 20  # one more α per layer than the paper
    binary = model_summary(ternarize_model(resnet20(seed=0), variant="binary"))
    t = binary.totals
    assert all(e["bits_per_weight"] == 1 for e in binary.layers)
    assert t["code_bytes"] == sum(math.ceil(e["weights"] / 8) for e in binary.layers)
    assert t["sparsity"] == 0.0 and t["skipped"] == 0 and t["adds"] == RESNET20_MACS
    assert 16 < t["compression_ratio"] < t["quantized_weight_compression_ratio"] < 32


# ------------------------------------------------------------ forward order
class _Reordered(nn.Module):
    def __init__(self):
        super().__init__()
        self.second = nn.Linear(4, 3, rng=0)  # registered first, runs second
        self.first = nn.Linear(5, 4, rng=1)
        self.unused = nn.Linear(2, 2, rng=2)

    def forward(self, x):
        return self.second.forward(self.first.forward(x))


def test_layers_follow_the_forward_pass_and_unused_layers_go_last():
    s = model_summary(_Reordered(), input_shape=(1, 5))
    assert [e["name"] for e in s.layers] == ["first", "second", "unused"]
    assert [e["calls"] for e in s.layers] == [1, 1, 0]
    assert [e["macs"] for e in s.layers] == [20, 12, 0]
    assert s.layers[2]["output_shape"] is None
    assert any("unused" in note for note in s.notes)


class _Shared(nn.Module):
    """One layer run twice (weight sharing): its work is counted twice."""

    def __init__(self):
        super().__init__()
        self.other = nn.Linear(4, 4, rng=0)  # registered first, runs second
        self.shared = nn.Linear(4, 4, rng=1)

    def forward(self, x):
        return self.shared.forward(self.other.forward(self.shared.forward(x)))


def test_layer_called_twice_counts_twice_and_keeps_its_first_place():
    s = model_summary(_Shared(), input_shape=(1, 4))
    assert [(e["name"], e["calls"], e["macs"]) for e in s.layers] == [("shared", 2, 32), ("other", 1, 16)]
    assert s.totals["macs"] == 48


# ------------------------------------------------------------ serialisation and text
def test_to_dict_is_json_and_to_text_lists_every_layer():
    s = model_summary(ternarize_model(resnet20(seed=0), t_ex=2))
    d = s.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert json.loads(s.to_json()) == d
    d["layers"][0]["expansions"][0]["alpha"] = -1.0  # a copy: editing it leaves the summary alone
    assert s.layers[0]["expansions"][0]["alpha"] > 0
    assert isinstance(d["totals"]["compression_ratio"], float)
    assert type(d["layers"][0]["expansions"][0]["alpha"]) is float
    text = s.to_text()
    assert str(s) == text and isinstance(s, ModelSummary)
    for e in s.layers:
        assert f"\n{e['name']} " in text
    assert "\nTotals (20 Conv2d/Linear layers, 20 quantized" in text
    assert "40,551,040" in text and "1.08 MB" in text and "139.87 KB" in text


def test_full_precision_text(fp_summary):
    text = fp_summary.to_text()
    assert "compression          1.00× whole model" in text
    assert "269,722" in text and "(1,078,888 bytes)" in text
    total_row = [line for line in text.splitlines() if line.startswith("total ")]
    assert len(total_row) == 1 and total_row[0].split() == ["total", "40,551,040", "0", "0", "0",
                                                             "40,551,040", "0.0%"]


# ------------------------------------------------------------ the model is left as it was
def test_summary_leaves_modes_parameters_and_caches_unchanged():
    model = ternarize_model(resnet20(seed=0))
    model.train()
    model.layer2.eval()  # mixed modes must come back as they were, module by module
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    model.forward(x)  # a pending backward: its caches must survive the summary
    before = model.state_dict()
    modes = {name: m.training for name, m in model.named_modules()}
    caches = {name: {k: v for k, v in vars(m).items() if k.endswith("_cache")}
              for name, m in model.named_modules()}
    model_summary(model)
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(np.array_equal(before[k], after[k]) for k in before)  # incl. BN running stats
    assert {name: m.training for name, m in model.named_modules()} == modes
    for name, m in model.named_modules():
        assert "forward" not in vars(m)
        now = {k: v for k, v in vars(m).items() if k.endswith("_cache")}
        assert now.keys() == caches[name].keys()
        assert all(now[k] is caches[name][k] for k in now)
    model.backward(np.ones((2, 10), np.float32))  # still possible


def test_summary_leaves_no_activation_caches_behind():
    model = resnet20(seed=0)  # never run: no layer holds a cache
    model_summary(model)
    leftovers = [(name, k) for name, m in model.named_modules() for k in vars(m) if k.endswith("_cache")]
    assert leftovers == []


def test_failed_forward_restores_model_and_names_input_shape():
    model = resnet20(seed=0)
    with pytest.raises(ValueError, match="input_shape"):
        model_summary(model, input_shape=(1, 4, 32, 32))
    assert all(m.training for _, m in model.named_modules())
    assert all("forward" not in vars(m) and "_cache" not in vars(m) for _, m in model.named_modules())


@pytest.mark.parametrize("bad", [(1, 3, 0, 32), "1x3x32x32", (1.0, 3, 32, 32), (3,), ()])
def test_bad_input_shape(bad):
    with pytest.raises(ValueError, match="input_shape: expected a tuple of positive ints"):
        model_summary(_hand_model(), input_shape=bad)


def test_bad_model():
    with pytest.raises(TypeError, match="model: expected a tqref Module, got ndarray"):
        model_summary(np.zeros(3))
    with pytest.raises(ValueError, match="no|none"):
        model_summary(nn.Sequential(nn.ReLU()), input_shape=(1, 4))
