"""The paper's ternarization, equation by equation, on hand-made weights."""

import itertools

import numpy as np
import pytest

from tqref import nn
from tqref.functional import conv2d_forward, softmax_cross_entropy
from tqref.gradcheck import check_gradient
from tqref.models import get_model, resnet20
from tqref.optim import SGD
from tqref.ternary import (
    TernaryConv2d,
    TernaryLinear,
    alpha,
    effective_weight,
    is_ternary,
    straight_through_gradient,
    ternarize,
    ternarize_expansions,
    ternarize_model,
    ternary_codes,
    threshold,
    to_full_precision,
)

# max|W| = 2.0, so Δ = 0.05·2 = 0.1 (Eq. 1)
W = np.array([[2.0, -0.5, 0.1, -0.1],
              [0.05, -0.09, 0.0, 1.2]])


# ------------------------------------------------------------ Eq. (1)
def test_threshold_is_delta_times_max_abs():
    assert threshold(W) == pytest.approx(0.1)
    assert threshold(W, 0.25) == pytest.approx(0.5)
    assert threshold(-W) == pytest.approx(0.1)


def test_threshold_twn_rule_and_per_channel():
    assert threshold(W, 0.7, "twn") == pytest.approx(0.7 * np.abs(W).mean())
    np.testing.assert_allclose(threshold(W, 0.05, per_channel=True), [0.1, 0.06])


# ------------------------------------------------------------ Eq. (3)
def test_codes_with_ties_at_plus_and_minus_delta():
    codes = ternary_codes(W, 0.1)
    # W = 0.1 and W = −0.1 are exactly ±Δ: both go to ±1 (symmetric rule)
    np.testing.assert_array_equal(codes, [[1, -1, 1, -1], [0, 0, 0, 1]])
    assert codes.dtype == np.int8


def test_codes_just_inside_the_threshold_are_zero():
    w = np.array([0.1 - 1e-12, -(0.1 - 1e-12), 0.1 + 1e-12])
    np.testing.assert_array_equal(ternary_codes(w, 0.1), [0, 0, 1])


# ------------------------------------------------------------ Eq. (2)
def test_alpha_is_mean_magnitude_above_threshold():
    # I_Δ = {2.0, 0.5, 0.1, 0.1, 1.2}: mean = 3.9 / 5
    assert alpha(W, 0.1) == pytest.approx(3.9 / 5)
    q = ternarize(W)
    assert q.alpha == pytest.approx(0.78) and q.threshold == pytest.approx(0.1)
    np.testing.assert_allclose(q.weight(np.float64), 0.78 * q.codes)


def test_alpha_per_channel():
    np.testing.assert_allclose(alpha(W, np.array([0.1, 0.06]), per_channel=True), [2.7 / 4, (0.09 + 1.2) / 2])


@pytest.mark.parametrize("seed", range(5))
def test_alpha_minimises_squared_error_for_the_chosen_codes(seed):
    """Eq. (2) against a brute-force search over α."""
    w = np.random.default_rng(seed).standard_normal((8, 5))
    q = ternarize(w)
    grid = np.linspace(0, 2 * q.alpha, 20001)
    errors = [np.sum((w - a * q.codes) ** 2) for a in grid]
    best = grid[int(np.argmin(errors))]
    assert abs(best - q.alpha) <= grid[1] - grid[0]
    assert np.sum((w - q.alpha * q.codes) ** 2) <= min(errors) + 1e-12


def test_all_zero_weight_is_defined_not_nan():
    q = ternarize(np.zeros((3, 2, 3, 3)))
    assert q.threshold == 0.0 and q.alpha == 0.0 and not q.codes.any()
    layer = TernaryConv2d.from_float(nn.Conv2d(2, 3, 3, bias=False, rng=0))
    layer.params["weight"][...] = 0
    out = layer.forward(np.ones((1, 2, 4, 4), np.float32))
    assert np.all(out == 0)
    layer.backward(np.ones_like(out))
    assert np.all(np.isfinite(layer.grads["weight"])) and layer.grads["weight"].any()


def test_zero_channel_with_per_channel_thresholds():
    w = np.array([[0.0, 0.0], [1.0, -0.02]])
    q = ternarize(w, per_channel=True)
    np.testing.assert_array_equal(q.codes, [[0, 0], [1, 0]])
    np.testing.assert_allclose(q.alpha, [0.0, 1.0])


# ------------------------------------------------------------ Eq. (4)
def test_straight_through_gradient_equals_eq4():
    latent = np.array([0.5, -0.99, 1.0, -1.5, 0.0])
    g = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    np.testing.assert_array_equal(straight_through_gradient(g, latent), [1.0, 2.0, 0.0, 0.0, 5.0])
    np.testing.assert_array_equal(straight_through_gradient(g, latent, t_ex=2), [2.0, 4.0, 0.0, 0.0, 10.0])


def test_ternary_layer_weight_gradient_is_ste_of_conv_gradient():
    conv = nn.Conv2d(2, 3, 3, padding=1, bias=False, rng=0).astype(np.float64)
    conv.params["weight"][0, 0, 0, 0] = 1.5  # beyond the clip: receives no gradient
    layer = TernaryConv2d.from_float(conv)
    x = np.random.default_rng(0).standard_normal((2, 2, 5, 5))
    out = layer.forward(x)
    dout = np.random.default_rng(1).standard_normal(out.shape)
    layer.backward(dout)
    w_eff = layer.effective_weight()
    from tqref.functional import conv2d_backward
    _, dw_eff, _ = conv2d_backward(dout, conv2d_forward(x, w_eff, None, 1, 1)[1])
    expected = dw_eff * (np.abs(layer.params["weight"]) < 1)
    np.testing.assert_allclose(layer.grads["weight"], expected, rtol=1e-12)
    assert layer.grads["weight"][0, 0, 0, 0] == 0


@pytest.mark.parametrize("t_ex", [1, 2, 4])
def test_ternary_conv_gradients_float64_with_codes_held_fixed(t_ex):
    """With Δ, α and T fixed the layer is a convolution with W_eff: check
    ∂L/∂x and ∂L/∂b numerically, and ∂L/∂W_eff before the STE."""
    rng = np.random.default_rng(t_ex)
    conv = nn.Conv2d(3, 4, 3, stride=2, padding=1, rng=1).astype(np.float64)
    conv.params["bias"][...] = rng.standard_normal(4)
    layer = TernaryConv2d.from_float(conv, t_ex=t_ex)
    x = rng.standard_normal((2, 3, 7, 6))
    out = layer.forward(x)
    dout = rng.standard_normal(out.shape)
    dx = layer.backward(dout)
    # Codes depend on W only, so moving x or b keeps them fixed.  The layer is
    # then linear in x and b: a large step has no truncation error and less rounding.
    check_gradient(lambda: layer.forward(x), x, dx, dout, h=1e-3, name="x")
    b = layer.params["bias"]
    check_gradient(lambda: layer.forward(x), b, layer.grads["bias"].copy(), dout, h=1e-3, name="bias")
    # ∂L/∂W_eff numerically, with W_eff frozen, then Eq. (4)/(5)
    w_eff = layer.effective_weight()
    numeric_weff = check_gradient(lambda: conv2d_forward(x, w_eff, b, 2, 1)[0], w_eff,
                                  layer.grads["weight"] / t_ex, dout, h=1e-3, name="W_eff")
    assert numeric_weff < 1e-6


def test_ternary_linear_gradients_float64():
    rng = np.random.default_rng(3)
    layer = TernaryLinear.from_float(nn.Linear(6, 4, rng=0).astype(np.float64), t_ex=2)
    x = rng.standard_normal((5, 6))
    out = layer.forward(x)
    dout = rng.standard_normal(out.shape)
    dx = layer.backward(dout)
    check_gradient(lambda: layer.forward(x), x, dx, dout, h=1e-3, name="x")
    w_eff = layer.effective_weight()
    np.testing.assert_allclose(layer.grads["weight"], 2 * dout.T @ x * (np.abs(layer.params["weight"]) < 1))
    np.testing.assert_allclose(out, x @ w_eff.T + layer.params["bias"])


# ------------------------------------------------------------ Eq. (5)
@pytest.mark.parametrize("t_ex", [1, 2, 4])
def test_expansion_equals_sum_of_convolutions_and_a_plain_conv(t_ex):
    rng = np.random.default_rng(t_ex)
    conv = nn.Conv2d(3, 5, 3, padding=1, rng=2).astype(np.float64)
    conv.params["bias"][...] = rng.standard_normal(5)
    layer = TernaryConv2d.from_float(conv, t_ex=t_ex)
    x = rng.standard_normal((2, 3, 6, 6))
    out = layer.forward(x)
    expansions = layer.quantize()
    assert len(expansions) == t_ex
    b = layer.params["bias"]
    summed = sum(conv2d_forward(x, q.weight(np.float64), None, 1, 1)[0] for q in expansions) + b[None, :, None, None]
    np.testing.assert_allclose(out, summed, rtol=1e-12, atol=1e-12)  # bias added once
    w_eff = effective_weight(expansions, np.float64)
    np.testing.assert_allclose(out, conv2d_forward(x, w_eff, b, 1, 1)[0], rtol=1e-12, atol=1e-12)
    levels = np.unique(np.round(w_eff, 12))
    assert len(levels) <= 2 * t_ex + 1
    np.testing.assert_allclose(levels, -levels[::-1])  # symmetric quantizer


def test_expansion_thresholds_follow_the_paper_lists():
    w = np.random.default_rng(0).standard_normal((16, 16, 3, 3))
    expansions = ternarize_expansions(w, (0.05, 0.10, 0.15, 0.20))
    m = np.abs(w).max()
    np.testing.assert_allclose([q.threshold for q in expansions], [0.05 * m, 0.10 * m, 0.15 * m, 0.20 * m])
    # nested thresholds: each expansion zeroes a superset of the previous one's zeros
    for a, b in itertools.pairwise(expansions):
        assert np.all((a.codes == 0) <= (b.codes == 0))
    layer = TernaryConv2d.from_float(nn.Conv2d(2, 2, 3, rng=0), t_ex=2)
    assert layer.delta_factors == (0.05, 0.10)


def test_delta_and_alpha_recomputed_every_forward():
    layer = TernaryConv2d.from_float(nn.Conv2d(2, 3, 3, bias=False, rng=0))
    x = np.ones((1, 2, 3, 3), np.float32)
    first = layer.forward(x)
    layer.params["weight"] *= 2  # α doubles, codes unchanged
    np.testing.assert_allclose(layer.forward(x), 2 * first, rtol=1e-6)
    layer.eval()
    np.testing.assert_allclose(layer.forward(x), 2 * first, rtol=1e-6)


# ------------------------------------------------------------ conversion
def test_ternarize_model_converts_every_conv_and_linear_sharing_latent_weights():
    model = resnet20(seed=0)
    before = {name: p for name, p in model.named_parameters()}
    state_keys = set(model.state_dict())
    ternarize_model(model)
    layers = [m for _, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(layers) == 20 and all(isinstance(m, (TernaryConv2d, TernaryLinear)) for m in layers)
    after = dict(model.named_parameters())
    assert all(after[name] is before[name] for name in before)  # the same arrays: latent = trained
    assert set(model.state_dict()) == state_keys
    assert model.layer2[0].conv1.path == "layer2.0.conv1"


def test_keep_first_and_last_in_full_precision():
    model = ternarize_model(resnet20(), t_ex=2, keep_first=True, keep_last=True)
    assert type(model.conv1) is nn.Conv2d and type(model.linear) is nn.Linear
    assert isinstance(model.layer1[0].conv1, TernaryConv2d) and model.layer1[0].conv1.t_ex == 2


def test_converting_twice_is_an_error_and_converting_back_works():
    model = ternarize_model(get_model("small"))
    with pytest.raises(ValueError, match="already converted.*to_full_precision"):
        ternarize_model(model)
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    to_full_precision(model)
    assert not is_ternary(model)
    reference = get_model("small")  # same seed: same latent weights
    np.testing.assert_array_equal(model.eval().forward(x), reference.eval().forward(x))
    ternarize_model(model, t_ex=4)
    assert is_ternary(model)


def test_ternary_model_output_differs_from_full_precision_but_uses_alpha_t():
    fp = resnet20(seed=0).eval()
    tern = ternarize_model(resnet20(seed=0)).eval()
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    assert not np.allclose(fp.forward(x), tern.forward(x))
    for _, m in fp.named_modules():
        if isinstance(m, nn.WeightedLayer):
            m.params["weight"][...] = ternarize(m.params["weight"]).weight(np.float32)
    np.testing.assert_allclose(fp.forward(x), tern.forward(x), rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------ bad input
@pytest.mark.parametrize("delta", [0, 1, 1.5, -0.1, True, "0.05"])
def test_bad_delta_factor(delta):
    with pytest.raises(ValueError, match=r"delta_factor: expected a number in \(0, 1\)"):
        threshold(W, delta)


@pytest.mark.parametrize("t_ex", [0, 3, 8, 2.0, True])
def test_bad_t_ex(t_ex):
    with pytest.raises(ValueError, match="t_ex: expected 1, 2 or 4"):
        ternarize_model(get_model("small"), t_ex=t_ex)


def test_bad_delta_lists():
    with pytest.raises(ValueError, match="strictly increasing"):
        ternarize_model(get_model("small"), t_ex=2, delta_factors=(0.10, 0.05))
    with pytest.raises(ValueError, match="expected 2 values for t_ex=2"):
        ternarize_model(get_model("small"), t_ex=2, delta_factors=(0.05,))
    with pytest.raises(ValueError, match=r"delta_factors\[1\]: expected a number in \(0, 1\)"):
        ternarize_model(get_model("small"), t_ex=2, delta_factors=(0.05, 1.2))
    with pytest.raises(ValueError, match="threshold_rule: expected one of"):
        ternarize_model(get_model("small"), threshold_rule="mean")
    with pytest.raises(ValueError, match="variant: expected one of"):
        ternarize_model(get_model("small"), variant="fancy")


def test_failed_conversion_leaves_model_unchanged():
    model = get_model("small")
    with pytest.raises(ValueError):
        ternarize_model(model, t_ex=3)
    assert not is_ternary(model)


# ------------------------------------------------------------ learning
@pytest.mark.long
def test_ternarized_resnet20_lowers_training_loss_on_cifar_subset():
    from tqref.data import load_cifar10, normalize
    try:
        data = load_cifar10(verbose=False)
        x_all, y_all = data["train_images"][:256], data["train_labels"][:256]
    except ValueError:  # no CIFAR-10 here: same test on fixed random images
        rng = np.random.default_rng(0)
        x_all, y_all = rng.integers(0, 256, (256, 3, 32, 32), dtype=np.uint8), rng.integers(0, 10, 256)
    model = ternarize_model(resnet20(seed=0))
    opt = SGD(model.parameters_and_gradients(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=3e-4)
    x = normalize(x_all)

    def full_loss():
        model.eval()
        loss = np.mean([softmax_cross_entropy(model.forward(x[i:i + 128]), y_all[i:i + 128])[0]
                        for i in (0, 128)])
        model.train()
        return loss

    start = full_loss()
    for epoch in range(4):
        for i in (0, 128):
            loss, dlogits = softmax_cross_entropy(model.forward(x[i:i + 128]), y_all[i:i + 128])
            model.backward(dlogits)
            opt.step()
    end = full_loss()
    assert end < start - 0.2, (start, end)
