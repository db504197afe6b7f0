"""Models: architecture, parameter counts, whole-network gradients, learning."""

import numpy as np
import pytest

from tqref.functional import softmax_cross_entropy
from tqref.gradcheck import check_module_gradients
from tqref.models import MODELS, get_model, resnet20
from tqref.optim import SGD


@pytest.mark.parametrize("name, count", [
    ("resnet20", 269_722), ("resnet32", 464_154), ("resnet44", 658_586), ("resnet56", 853_018),
])
def test_resnet_parameter_counts(name, count):
    assert get_model(name).num_parameters() == count


def test_resnet20_architecture():
    model = resnet20()
    convs = [(n, m) for n, m in model.named_modules() if type(m).__name__ == "Conv2d"]
    assert len(convs) == 19  # 1 stem + 3 stages × 3 blocks × 2
    shapes = {n: m.params["weight"].shape for n, m in convs}
    assert shapes["conv1"] == (16, 3, 3, 3)
    assert shapes["layer2.0.conv1"] == (32, 16, 3, 3) and model.layer2[0].conv1.stride == 2
    assert shapes["layer3.2.conv2"] == (64, 64, 3, 3)
    assert all("bias" not in m.params for _, m in convs)
    assert model.linear.params["weight"].shape == (10, 64)
    # option-A shortcuts exactly where the shape changes
    shortcuts = [n for n, m in model.named_modules() if type(m).__name__ == "OptionAShortcut"]
    assert shortcuts == ["layer2.0.shortcut", "layer3.0.shortcut"]
    out = model.forward(np.zeros((2, 3, 32, 32), np.float32))
    assert out.shape == (2, 10)


def test_he_fan_out_init_statistics():
    model = get_model("resnet56", seed=0)
    w = model.layer3[0].conv2.params["weight"]  # 64·64·9 values
    np.testing.assert_allclose(w.std(), np.sqrt(2 / (3 * 3 * 64)), rtol=0.03)
    assert abs(w.mean()) < 0.01
    lin = model.linear.params["weight"]
    np.testing.assert_allclose(lin.std(), np.sqrt(2 / 64), rtol=0.15)
    np.testing.assert_array_equal(model.bn1.params["weight"], 1)


def test_unknown_model_name():
    with pytest.raises(ValueError, match=r"get_model: name: expected one of .*'resnet20'.*got 'resnet18'"):
        get_model("resnet18")


def test_whole_resnet20_gradient_float64_random_directions():
    """Every parameter and the input of ResNet-20 at once, along random directions."""
    model = resnet20(dtype=np.float64, seed=0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 16, 16))
    errors = check_module_gradients(model, x, n_directions=3, rng=rng, h=1e-5)
    assert max(errors) < 1e-6, errors


def test_whole_resnet20_with_loss_gradient_float64():
    """The same through the softmax cross-entropy, as in training."""
    model = resnet20(dtype=np.float64, seed=1)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 3, 16, 16))
    labels = np.array([1, 7, 3])
    loss, dlogits = softmax_cross_entropy(model.forward(x), labels)
    model.backward(dlogits)
    w = model.layer2[1].conv1.params["weight"]
    analytic = model.layer2[1].conv1.grads["weight"].copy()
    u = rng.standard_normal(w.shape)
    u /= np.linalg.norm(u)  # a unit step keeps every ReLU on its side of the kink
    h = 1e-5
    w += h * u
    plus, _ = softmax_cross_entropy(model.forward(x), labels)
    w -= 2 * h * u
    minus, _ = softmax_cross_entropy(model.forward(x), labels)
    w += h * u
    numeric = (plus - minus) / (2 * h)
    predicted = float(np.sum(analytic * u))
    assert abs(numeric - predicted) / (abs(numeric) + abs(predicted)) < 1e-6


def _overfit(model, steps=150, lr=0.05):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 3, 32, 32)).astype(np.float32)
    y = rng.integers(0, 10, 64)
    opt = SGD(model.parameters_and_gradients(), lr=lr, momentum=0.9)
    losses = []
    for _ in range(steps):
        loss, dlogits = softmax_cross_entropy(model.forward(x), y)
        model.backward(dlogits)
        opt.step()
        losses.append(loss)
    return losses, model, x, y


def test_small_net_overfits_64_images():
    """64 CIFAR-sized images with random labels: memorisable only if every
    gradient is right.  The loss must fall from ≈ ln 10 to near zero."""
    losses, model, x, y = _overfit(get_model("small", seed=0), steps=150)
    assert losses[0] > 2.0
    assert losses[-1] < 0.05, losses[-10:]
    assert (model.forward(x).argmax(axis=1) == y).mean() == 1.0


def test_all_models_are_registered():
    assert set(MODELS) >= {"resnet20", "resnet32", "resnet44", "resnet56", "small"}
