"""Layers with parameters: gradients, modes, state dicts, dtypes, bad input."""

import numpy as np
import pytest

from tqref import nn
from tqref.gradcheck import check_module_gradients

RNG = np.random.default_rng(1234)


def _x(*shape, dtype=np.float64):
    return RNG.standard_normal(shape).astype(dtype)


# ------------------------------------------------------------ gradients
@pytest.mark.parametrize("make, shape", [
    (lambda: nn.Conv2d(3, 4, 3, stride=1, padding=1, rng=0), (2, 3, 5, 5)),
    (lambda: nn.Conv2d(2, 3, 3, stride=2, padding=0, bias=False, rng=0), (1, 2, 7, 6)),
    (lambda: nn.Linear(5, 3, rng=0), (4, 5)),
    (lambda: nn.BatchNorm2d(3), (2, 3, 3, 4)),
    (lambda: nn.Sequential(nn.Conv2d(2, 4, 3, padding=1, rng=0), nn.BatchNorm2d(4), nn.ReLU(),
                           nn.MaxPool2x2(), nn.GlobalAvgPool2d(), nn.Linear(4, 3, rng=1)), (3, 2, 6, 6)),
    (lambda: nn.BasicBlock(4, 4, stride=1, rng=0), (2, 4, 6, 6)),
    (lambda: nn.BasicBlock(4, 8, stride=2, rng=0), (2, 4, 6, 6)),
])
def test_layer_gradients_float64(make, shape):
    layer = make().astype(np.float64)
    errors = check_module_gradients(layer, _x(*shape), n_directions=3, rng=np.random.default_rng(0))
    assert max(errors) < 1e-6


def test_backward_writes_named_gradients():
    conv = nn.Conv2d(2, 3, 3, padding=1, rng=0).astype(np.float64)
    x = _x(2, 2, 4, 4)
    out = conv.forward(x)
    conv.backward(np.ones_like(out))
    grads = dict(conv.named_gradients())
    # dL/db for L = sum(out) is the number of output positions per filter
    np.testing.assert_allclose(grads["bias"], np.full(3, 2 * 4 * 4))
    assert grads["weight"].shape == (3, 2, 3, 3)


def test_backward_without_forward_is_a_clear_error():
    conv = nn.Conv2d(2, 3, 3, rng=0)
    conv.path = "features.0"
    with pytest.raises(RuntimeError, match="Conv2d 'features.0'.*without a forward"):
        conv.backward(np.zeros((1, 3, 2, 2), np.float32))


# ------------------------------------------------------------ batch norm modes
def test_batchnorm_train_uses_batch_stats_and_updates_running_stats():
    bn = nn.BatchNorm2d(3, momentum=0.1)
    x = (_x(8, 3, 4, 4, dtype=np.float32) * 3 + 5).astype(np.float32)
    out = bn.forward(x)
    np.testing.assert_allclose(out.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(out.var(axis=(0, 2, 3)), 1, atol=1e-3)
    m = 8 * 4 * 4
    expected_mean = 0.1 * x.mean(axis=(0, 2, 3))
    expected_var = 0.9 + 0.1 * x.var(axis=(0, 2, 3)) * m / (m - 1)
    np.testing.assert_allclose(bn.buffers["running_mean"], expected_mean, rtol=1e-5)
    np.testing.assert_allclose(bn.buffers["running_var"], expected_var, rtol=1e-5)


def test_batchnorm_eval_uses_running_stats_and_leaves_them():
    bn = nn.BatchNorm2d(2)
    bn.buffers["running_mean"][...] = [1.0, -2.0]
    bn.buffers["running_var"][...] = [4.0, 0.25]
    bn.params["weight"][...] = [2.0, 1.0]
    bn.params["bias"][...] = [0.5, 0.0]
    bn.eval()
    x = _x(3, 2, 2, 2, dtype=np.float32)
    out = bn.forward(x)
    expected = np.empty_like(x)
    expected[:, 0] = 2.0 * (x[:, 0] - 1.0) / np.sqrt(4.0 + 1e-5) + 0.5
    expected[:, 1] = (x[:, 1] + 2.0) / np.sqrt(0.25 + 1e-5)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(bn.buffers["running_mean"], [1.0, -2.0])
    # one sample in eval mode is fine; its output does not depend on the batch
    np.testing.assert_allclose(bn.forward(x[:1]), out[:1], rtol=1e-6)


def test_train_eval_switch_reaches_every_layer():
    from tqref.models import resnet20
    model = resnet20()
    model.eval()
    assert all(not m.training for _, m in model.named_modules())
    model.train()
    assert all(m.training for _, m in model.named_modules())


# ------------------------------------------------------------ state dicts
def test_state_dict_roundtrip_with_savez(tmp_path):
    from tqref.models import resnet20
    a, b = resnet20(seed=1), resnet20(seed=2)
    a.forward(_x(2, 3, 32, 32, dtype=np.float32))  # moves BN running stats
    path = tmp_path / "model.npz"
    np.savez(path, **a.state_dict())
    with np.load(path, allow_pickle=False) as state:
        b.load_state_dict(state)
    for (name, pa), (_, pb) in zip(sorted(a.state_dict().items()), sorted(b.state_dict().items())):
        np.testing.assert_array_equal(pa, pb, err_msg=name)
    x = _x(2, 3, 32, 32, dtype=np.float32)
    np.testing.assert_array_equal(a.eval().forward(x), b.eval().forward(x))


def test_state_dict_holds_buffers_and_pytorch_style_names():
    from tqref.models import resnet20
    keys = set(resnet20().state_dict())
    for key in ["conv1.weight", "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var",
                "layer1.0.conv1.weight", "layer2.0.bn2.running_var", "layer3.2.conv2.weight",
                "linear.weight", "linear.bias"]:
        assert key in keys


def test_load_state_dict_from_another_model_names_the_problem():
    from tqref.models import resnet20, resnet32
    with pytest.raises(ValueError, match="missing keys|unexpected keys"):
        resnet20().load_state_dict(resnet32().state_dict())
    state = resnet20().state_dict()
    state["linear.weight"] = np.zeros((5, 64), np.float32)
    with pytest.raises(ValueError, match=r"'linear.weight': expected shape \(10, 64\), found \(5, 64\)"):
        resnet20().load_state_dict(state)


def test_load_state_dict_writes_in_place():
    conv = nn.Conv2d(2, 3, 3, rng=0)
    weight = conv.params["weight"]
    conv.load_state_dict({"weight": np.ones((3, 2, 3, 3)), "bias": np.zeros(3)})
    assert conv.params["weight"] is weight and weight.dtype == np.float32
    np.testing.assert_array_equal(weight, 1)


# ------------------------------------------------------------ dtypes
def test_float32_is_the_default_and_float64_works_throughout():
    from tqref.models import resnet20
    model = resnet20()
    assert all(p.dtype == np.float32 for _, p in model.named_parameters())
    assert all(b.dtype == np.float32 for _, b in model.named_buffers())
    out = model.forward(_x(2, 3, 32, 32, dtype=np.float32))
    assert out.dtype == np.float32
    assert model.backward(np.ones_like(out)).dtype == np.float32
    model64 = resnet20(dtype=np.float64)
    assert all(p.dtype == np.float64 for _, p in model64.named_parameters())
    out64 = model64.forward(_x(2, 3, 32, 32))
    assert out64.dtype == np.float64
    assert model64.backward(np.ones_like(out64)).dtype == np.float64
    assert all(g.dtype == np.float64 for _, g in model64.named_gradients())


def test_same_seed_gives_same_weights_in_both_dtypes():
    from tqref.models import resnet20
    w32 = dict(resnet20(seed=3).named_parameters())
    w64 = dict(resnet20(seed=3, dtype=np.float64).named_parameters())
    for name in w32:
        np.testing.assert_allclose(w32[name], w64[name], rtol=1e-6, err_msg=name)


# ------------------------------------------------------------ bad input
def _named_conv():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, rng=0))
    return model, model[0]


def test_wrong_ndim_names_layer_and_shapes():
    model, _ = _named_conv()
    with pytest.raises(ValueError, match=r"Conv2d '0' input: expected a 4-D array, got 3-D array of shape \(3, 32, 32\)"):
        model.forward(np.zeros((3, 32, 32), np.float32))


def test_wrong_channel_count_names_layer_and_shapes():
    model, _ = _named_conv()
    with pytest.raises(ValueError, match=r"Conv2d '0' input: expected 3 channels .*got shape \(2, 32, 32, 3\)"):
        model.forward(np.zeros((2, 32, 32, 3), np.float32))


@pytest.mark.parametrize("dtype", [np.float64, np.uint8, np.int64])
def test_wrong_dtype_names_layer_and_dtypes(dtype):
    model, _ = _named_conv()
    with pytest.raises(TypeError, match=r"Conv2d '0' input: expected dtype float"):
        model.forward(np.zeros((2, 3, 8, 8), dtype))


def test_nan_or_inf_in_input_is_rejected():
    model, _ = _named_conv()
    x = np.zeros((2, 3, 8, 8), np.float32)
    x[1, 2, 3, 4] = np.nan
    with pytest.raises(ValueError, match=r"Conv2d '0' input: contains 1 NaN or inf"):
        model.forward(x)
    x[1, 2, 3, 4] = np.inf
    with pytest.raises(ValueError, match="NaN or inf"):
        model.forward(x)


def test_nan_in_parameter_is_rejected():
    model, conv = _named_conv()
    conv.params["weight"][0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match=r"Conv2d '0' parameter 'weight': contains 1 NaN"):
        model.forward(np.zeros((2, 3, 8, 8), np.float32))


def test_linear_and_batchnorm_bad_input():
    lin = nn.Linear(4, 2, rng=0)
    with pytest.raises(ValueError, match=r"Linear input: expected 4 channels .*got shape \(3, 5\)"):
        lin.forward(np.zeros((3, 5), np.float32))
    bn = nn.BatchNorm2d(4)
    with pytest.raises(ValueError, match=r"BatchNorm2d input: expected a 4-D array, got 2-D"):
        bn.forward(np.zeros((3, 4), np.float32))
    with pytest.raises(TypeError, match="numpy.ndarray, got list"):
        bn.forward([[1.0]])


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="Conv2d: kernel_size: expected a positive integer, got 0"):
        nn.Conv2d(3, 4, 0)
    with pytest.raises(ValueError, match="Conv2d: padding: expected a non-negative integer, got -1"):
        nn.Conv2d(3, 4, 3, padding=-1)
    with pytest.raises(TypeError, match="dtype: expected float32 or float64, got float16"):
        nn.Linear(3, 4, dtype=np.float16)
    with pytest.raises(TypeError, match="Sequential: layer 1: expected a tqref Module"):
        nn.Sequential(nn.ReLU(), lambda x: x)


def test_no_grad_keeps_no_caches_and_gives_the_same_outputs():
    from tqref.models import resnet20
    model = resnet20(seed=0).eval()
    x = _x(2, 3, 32, 32, dtype=np.float32)
    with nn.no_grad():
        out = model.forward(x)
    assert all(getattr(m, "_cache", None) is None for _, m in model.named_modules())
    with pytest.raises(RuntimeError, match="no_grad"):
        model.backward(np.ones_like(out))
    np.testing.assert_array_equal(out, model.forward(x))  # outside: caches again
    assert model.conv1._cache is not None
    model.backward(np.ones_like(out))
