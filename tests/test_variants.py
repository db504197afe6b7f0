"""TTQ and binary-weight variants (tqref.ternary.variants) on hand-made weights."""

import io

import numpy as np
import pytest

from tqref import nn
from tqref.functional import softmax_cross_entropy
from tqref.gradcheck import check_gradient
from tqref.models import get_model, resnet20
from tqref.optim import SGD
from tqref.ternary import VARIANTS, Ternarized, is_ternary, ternarize_model, to_full_precision
from tqref.ternary.convert import is_quantized_layer, quantized_layers
from tqref.ternary.variants import TTQ_FALLBACK_SCALE, BinaryConv2d, BinaryLinear, TTQConv2d, TTQLinear, TTQTernarized

# max|W| = 2.0, so Δ = 0.05·2 = 0.1.  I_p = {2.0, 0.1, 1.2}, I_n = {−0.5, −0.1}, zeros elsewhere.
W = np.array([[2.0, -0.5, 0.1, -0.1],
              [0.05, -0.09, 0.0, 1.2]])
CODES = np.array([[1, -1, 1, -1],
                  [0, 0, 0, 1]])


def linear_with(weight, cls, bias=None, **options):
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, dtype=np.float64)
    layer.params["weight"][...] = weight
    if bias is not None:
        layer.params["bias"][...] = bias
    return cls.from_float(layer, **options)


def set_scales(layer, scale_pos, scale_neg):
    layer.params["scale_pos"][...] = scale_pos
    layer.params["scale_neg"][...] = scale_neg


# ------------------------------------------------------------------- TTQ
def test_registered_variants():
    assert VARIANTS["ttq"] == (TTQConv2d, TTQLinear, {})
    assert VARIANTS["binary"] == (BinaryConv2d, BinaryLinear, {})


def test_ttq_initial_scales_are_per_sign_means():
    layer = linear_with(W, TTQLinear)
    assert float(layer.params["scale_pos"]) == pytest.approx((2.0 + 0.1 + 1.2) / 3)
    assert float(layer.params["scale_neg"]) == pytest.approx((0.5 + 0.1) / 2)
    for key in ("scale_pos", "scale_neg"):
        assert layer.params[key].shape == () and layer.params[key].dtype == np.float64
        assert layer.grads[key].shape == () and layer.grads[key].dtype == np.float64


def test_ttq_initial_scales_fallbacks():
    # all positive: I_n is empty, W_n starts at Eq. (2)'s α over both signs = W_p here
    layer = linear_with(np.array([[1.0, 0.5, 0.01]]), TTQLinear)
    assert float(layer.params["scale_pos"]) == pytest.approx(0.75)
    assert float(layer.params["scale_neg"]) == pytest.approx(0.75)
    # all zero: no code is non-zero, both start at the small positive constant
    layer = linear_with(np.zeros((2, 3)), TTQLinear)
    assert float(layer.params["scale_pos"]) == float(layer.params["scale_neg"]) == TTQ_FALLBACK_SCALE
    np.testing.assert_array_equal(layer.effective_weight(), 0.0)


def test_ttq_forward_exact():
    layer = linear_with(W, TTQLinear, bias=np.array([0.5, -1.0]))
    set_scales(layer, 0.7, 0.3)
    expected_weight = np.array([[0.7, -0.3, 0.7, -0.3],
                                [0.0, 0.0, 0.0, 0.7]])
    np.testing.assert_array_equal(layer.effective_weight(), expected_weight)
    x = np.array([[1.0, 2.0, 3.0, 4.0]])
    # 0.7 − 0.6 + 2.1 − 1.2 + 0.5 = 1.5 ;  2.8 − 1.0 = 1.8
    np.testing.assert_allclose(layer.forward(x), [[1.5, 1.8]], rtol=0, atol=1e-12)


def test_ttq_quantize_reports_codes_alpha_threshold():
    layer = linear_with(W, TTQLinear)
    set_scales(layer, 0.7, 0.3)
    (q,) = layer.quantize()
    assert isinstance(q, Ternarized) and isinstance(q, TTQTernarized)
    np.testing.assert_array_equal(q.codes, CODES)
    assert q.codes.dtype == np.int8
    assert q.alpha == (0.7, 0.3)
    assert q.threshold == pytest.approx(0.1)
    np.testing.assert_array_equal(q.weight(np.float64), layer.effective_weight())
    assert q.sparsity == pytest.approx(3 / 8)
    set_scales(layer, 0.4, 0.4)
    (q,) = layer.quantize()
    assert q.alpha == 0.4 and isinstance(q.alpha, float)
    np.testing.assert_array_equal(q.weight(np.float64), 0.4 * CODES)
    assert layer.t_ex == 1 and layer.bits_per_weight == 2 and is_quantized_layer(layer)


def test_ttq_backward_formulas_on_hand_made_numbers():
    layer = linear_with(W, TTQLinear, bias=np.zeros(2))
    set_scales(layer, 0.7, 0.3)
    x = np.array([[1.0, 2.0, 3.0, 4.0]])
    dout = np.array([[2.0, -1.0]])
    layer.forward(x)
    dx = layer.backward(dout)
    g = dout.T @ x  # ∂L/∂W' of a linear layer: [[2, 4, 6, 8], [−1, −2, −3, −4]]
    # ∂L/∂W_p = Σ_{I_p} g = 2 + 6 − 4 ;  ∂L/∂W_n = −Σ_{I_n} g = −(4 + 8)
    assert float(layer.grads["scale_pos"]) == pytest.approx(g[0, 0] + g[0, 2] + g[1, 3]) == 4.0
    assert float(layer.grads["scale_neg"]) == pytest.approx(-(g[0, 1] + g[0, 3])) == -12.0
    # latent: W_p·g on I_p, g on the zeros, W_n·g on I_n
    expected_latent = np.array([[0.7 * 2, 0.3 * 4, 0.7 * 6, 0.3 * 8],
                                [-1.0, -2.0, -3.0, 0.7 * -4]])
    np.testing.assert_allclose(layer.grads["weight"], expected_latent, rtol=1e-12)
    np.testing.assert_allclose(layer.grads["bias"], [2.0, -1.0])
    np.testing.assert_allclose(dx, dout @ layer.effective_weight())


@pytest.mark.parametrize("kind", ["conv", "linear"])
def test_ttq_gradcheck_scales_input_bias(kind):
    rng = np.random.default_rng(1)
    if kind == "conv":
        plain = nn.Conv2d(3, 4, 3, padding=1, bias=True, dtype=np.float64, rng=rng)
        layer, x = TTQConv2d.from_float(plain), rng.standard_normal((2, 3, 5, 5))
    else:
        plain = nn.Linear(6, 4, bias=True, dtype=np.float64, rng=rng)
        layer, x = TTQLinear.from_float(plain), rng.standard_normal((3, 6))
    layer.params["bias"][...] = rng.standard_normal(4)
    set_scales(layer, 0.8, 0.45)  # unequal, so a swapped W_p/W_n gradient shows
    out = layer.forward(x)
    dout = rng.standard_normal(out.shape)
    dx = layer.backward(dout)
    grads = {key: layer.grads[key].copy() for key in ("scale_pos", "scale_neg", "bias")}

    def f():
        return layer.forward(x)

    # codes depend on the latent W only, so moving W_p, W_n, x or b leaves them fixed:
    # the numeric derivative is exact for these four
    check_gradient(f, x, dx, dout, name="x")
    for key, analytic in grads.items():
        check_gradient(f, layer.params[key], analytic, dout, name=key)


def test_ttq_from_float_shares_weight_and_leaves_original_alone():
    plain = nn.Linear(4, 2, dtype=np.float64)
    layer = TTQLinear.from_float(plain)
    assert layer.params["weight"] is plain.params["weight"]
    assert layer.grads["weight"] is plain.grads["weight"]
    assert set(plain.params) == {"weight", "bias"} and set(plain.grads) == {"weight", "bias"}
    assert set(layer.params) == {"weight", "bias", "scale_pos", "scale_neg"}


# ---------------------------------------------------------------- binary
def test_binary_forward_exact():
    weight = np.array([[0.5, -1.5, 0.0],
                       [-0.25, 2.0, 1.0]])
    layer = linear_with(weight, BinaryLinear, bias=np.array([1.0, 0.0]))
    alpha = (0.5 + 1.5 + 0.0 + 0.25 + 2.0 + 1.0) / 6  # 0.875
    expected_weight = alpha * np.array([[1, -1, 1],  # sign(0) := +1
                                        [-1, 1, 1]])
    np.testing.assert_array_equal(layer.effective_weight(), expected_weight)
    x = np.array([[1.0, 2.0, 3.0]])
    np.testing.assert_allclose(layer.forward(x), [[alpha * 2 + 1.0, alpha * 4]], atol=1e-12)
    (q,) = layer.quantize()
    np.testing.assert_array_equal(q.codes, [[1, -1, 1], [-1, 1, 1]])
    assert q.codes.dtype == np.int8
    assert q.alpha == pytest.approx(alpha) and q.threshold == 0.0 and q.sparsity == 0.0
    assert layer.t_ex == 1 and layer.bits_per_weight == 1 and is_quantized_layer(layer)


def test_binary_straight_through_gradient_with_clip():
    weight = np.array([[0.5, -1.5, 0.0],
                       [-0.25, 2.0, -1.0]])
    layer = linear_with(weight, BinaryLinear)
    x = np.array([[1.0, 2.0, 3.0]])
    dout = np.array([[2.0, -1.0]])
    layer.forward(x)
    layer.backward(dout)
    g = dout.T @ x  # [[2, 4, 6], [−1, −2, −3]], passed unscaled where |W| < 1
    expected = np.array([[2.0, 0.0, 6.0],
                         [-1.0, 0.0, 0.0]])  # |−1.5|, |2.0|, |−1.0| ≥ 1: clipped
    np.testing.assert_array_equal(layer.grads["weight"], expected)
    # a custom clip moves the boundary
    layer = linear_with(weight, BinaryLinear, clip=1.75)
    layer.forward(x)
    layer.backward(dout)
    np.testing.assert_array_equal(layer.grads["weight"], np.where(np.abs(weight) < 1.75, g, 0.0))


# ------------------------------------------------------------ conversion
def test_ttq_resnet20_conversion_and_state_dict_round_trip():
    model = resnet20(seed=0)
    plain_count, plain_keys = model.num_parameters(), set(model.state_dict())
    ternarize_model(model, variant="ttq")
    layers = quantized_layers(model)
    assert len(layers) == 20
    assert sum(isinstance(m, TTQConv2d) for _, m in layers) == 19
    assert sum(isinstance(m, TTQLinear) for _, m in layers) == 1
    assert not any(type(m) in (nn.Conv2d, nn.Linear) for _, m in model.named_modules())
    assert model.num_parameters() == plain_count + 2 * 20
    state = model.state_dict()
    assert set(state) - plain_keys == {f"{name}.{key}" for name, _ in layers for key in ("scale_pos", "scale_neg")}

    buffer = io.BytesIO()
    np.savez(buffer, **state)
    buffer.seek(0)
    loaded = np.load(buffer, allow_pickle=False)
    other = ternarize_model(resnet20(seed=1), variant="ttq")
    other.load_state_dict(loaded)
    for key, value in other.state_dict().items():
        np.testing.assert_array_equal(value, state[key], err_msg=key)
    assert float(other.conv1.params["scale_pos"]) == float(model.conv1.params["scale_pos"])


def test_binary_conversion_of_resnet20():
    model = resnet20(seed=0)
    plain_count = model.num_parameters()
    ternarize_model(model, variant="binary")
    layers = quantized_layers(model)
    assert len(layers) == 20 and all(isinstance(m, (BinaryConv2d, BinaryLinear)) for _, m in layers)
    assert model.num_parameters() == plain_count


def _train(model, steps, lr=0.05, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((16, 3, 8, 8)).astype(np.float32)
    y = rng.integers(0, 10, size=16)
    opt = SGD(model.parameters_and_gradients(), lr=lr, momentum=0.9)
    losses = []
    for _ in range(steps):
        loss, dlogits = softmax_cross_entropy(model.forward(x), y)
        model.backward(dlogits)
        opt.step()
        losses.append(loss)
    return losses


@pytest.mark.parametrize("variant", ["ttq", "binary"])
def test_training_steps_lower_the_loss(variant):
    model = ternarize_model(get_model("small", width=4, seed=0), variant=variant)
    first = quantized_layers(model)[0][1]
    before = {key: value.copy() for key, value in first.params.items()}
    losses = _train(model, steps=12)
    assert losses[-1] < 0.9 * losses[0], losses
    assert not np.array_equal(first.params["weight"], before["weight"])
    if variant == "ttq":
        assert float(first.params["scale_pos"]) != float(before["scale_pos"])
        assert float(first.params["scale_neg"]) != float(before["scale_neg"])


@pytest.mark.parametrize("variant", ["ttq", "binary"])
def test_to_full_precision_restores_plain_layers(variant):
    model = get_model("small", width=4, seed=0)
    weights = [m.params["weight"] for _, m in model.named_modules() if isinstance(m, nn.WeightedLayer)]
    ternarize_model(model, variant=variant)
    to_full_precision(model)
    assert not is_ternary(model)
    restored = [m for _, m in model.named_modules() if isinstance(m, nn.WeightedLayer)]
    assert [type(m) for m in restored] == [nn.Conv2d, nn.Conv2d, nn.Conv2d, nn.Linear]
    assert all(m.params["weight"] is w for m, w in zip(restored, weights))
    assert not any(hasattr(m, "clip") for m in restored)
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    model.eval()
    np.testing.assert_array_equal(model.forward(x), get_model("small", width=4, seed=0).eval().forward(x))
    ternarize_model(model, variant=variant)  # convertible again


def test_to_full_precision_drops_ttq_scales():
    model = get_model("small", width=4, seed=0)
    plain_count, plain_keys = model.num_parameters(), set(model.state_dict())
    to_full_precision(ternarize_model(model, variant="ttq"))
    assert model.num_parameters() == plain_count
    assert set(model.state_dict()) == plain_keys
    for _, m in model.named_modules():
        if isinstance(m, nn.WeightedLayer):
            assert set(m.grads) == set(m.params) <= {"weight", "bias"}


# ------------------------------------------------------------- bad input
@pytest.mark.parametrize("variant", ["ttq", "binary"])
@pytest.mark.parametrize("t_ex", [2, 4, 0, True])
def test_t_ex_other_than_one_is_refused(variant, t_ex):
    model = get_model("small", width=4)
    with pytest.raises(ValueError, match=rf"variant '{variant}': t_ex: expected 1.*got {t_ex!r}"):
        ternarize_model(model, t_ex=t_ex, variant=variant)
    assert not is_ternary(model)


@pytest.mark.parametrize("variant, option", [("ttq", {"per_channel": True}), ("ttq", {"clip": 2.0}),
                                             ("ttq", {"delta_factors": (0.1,)}),
                                             ("binary", {"threshold_rule": "twn"})])
def test_unsupported_options_are_refused(variant, option):
    (name,) = option
    with pytest.raises(ValueError, match=rf"variant '{variant}': unsupported option\(s\) \['{name}'\]"):
        ternarize_model(get_model("small", width=4), variant=variant, **option)


@pytest.mark.parametrize("clip", [0.0, -1.0, "1", True])
def test_binary_bad_clip_is_refused(clip):
    with pytest.raises(ValueError, match=r"variant 'binary': clip: expected a positive number"):
        ternarize_model(get_model("small", width=4), variant="binary", clip=clip)


def test_ttq_scales_ask_for_a_smaller_step():
    model = ternarize_model(get_model("small", width=4, seed=0), variant="ttq")
    multipliers = model.lr_multipliers()
    scales = [name for name, _ in model.named_parameters() if name.endswith(("scale_pos", "scale_neg"))]
    assert sorted(multipliers) == sorted(scales) and set(multipliers.values()) == {0.01}
    assert get_model("small").lr_multipliers() == {}
