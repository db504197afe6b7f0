"""Checkpoints (atomic, pickle-free, truncated / foreign files refused) and the
export for PyTorch (a plain PyTorch CIFAR ResNet-20 reproduces tqref's logits)."""

import json
import os

import numpy as np
import pytest
from torch_reference import torch_cifar_resnet  # tests/torch_reference.py

from tqref import io as tio
from tqref.functional import softmax_cross_entropy
from tqref.models import get_model
from tqref.optim import SGD, paper_schedule


def _trained(model, steps=2, seed=0):
    """A model moved off its initial state (weights, BN statistics, momentum)."""
    opt = SGD(model.parameters_and_gradients(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=3e-4)
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        x = rng.standard_normal((8, 3, 32, 32)).astype(np.float32)
        loss, dlogits = softmax_cross_entropy(model.forward(x), rng.integers(0, 10, 8))
        model.backward(dlogits)
        opt.step()
    return model, opt


def _save_small(path, model=None, epoch=3):
    model, opt = _trained(model or get_model("small", seed=0))
    rng = np.random.default_rng(11)
    rng.random(5)
    config = {"model": "small", "ternary": False, "t_ex": 1, "seed": 0}
    tio.save_checkpoint(path, model, config, optimizer=opt, epoch=epoch, schedule=paper_schedule(), rng=rng,
                        metrics={"top1": 0.5, "top5": 0.9, "best_top1": 0.6, "best_top5": 0.95, "best_epoch": 2})
    return model, opt, rng


# ---------------------------------------------------------------- atomic writes
def test_atomic_write_failure_keeps_the_old_file(tmp_path):
    path = tmp_path / "last.npz"
    tio.atomic_savez(path, {"a": np.arange(3)})
    before = path.read_bytes()

    def broken(f):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        tio.atomic_write(path, broken)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.npz"]  # no temporary file left behind


def test_atomic_files_get_the_usual_mode(tmp_path):
    path = tio.atomic_write_text(tmp_path / "x.json", "{}")
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask


# ---------------------------------------------------------------- checkpoints
def test_checkpoint_round_trip_without_pickle(tmp_path):
    path = tmp_path / "c.npz"
    model, opt, rng = _save_small(path)
    with np.load(path, allow_pickle=False) as z:  # nothing in the file needs pickle
        files = set(z.files)
        assert json.loads(str(z["config"]))["model"] == "small"
    assert {"format", "config", "epoch", "schedule", "rng_state", "best_top1", "model/0.weight",
            "model/1.running_var", "optim/step_count", "optim/momentum.0.weight"} <= files

    ckpt = tio.load_checkpoint(path)
    assert ckpt.epoch == 3 and ckpt.metrics["best_epoch"] == 2 and ckpt.metrics["top1"] == 0.5
    assert "MultiStepLR" in ckpt.schedule and "(80, 120, 160)" in ckpt.schedule
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(ckpt.model_state[name], value)
    for name, value in opt.state_dict().items():
        np.testing.assert_array_equal(ckpt.optim_state[name], value)
    # the Generator continues the same stream
    restored = tio.rng_from_json(ckpt.rng_state)
    np.testing.assert_array_equal(restored.random(4), rng.random(4))

    fresh, _ = tio.load_model(path)
    assert not fresh.training
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(fresh.state_dict()[name], value)


def test_weights_only_checkpoint_keeps_all_but_the_momentum_buffers(tmp_path):
    path, slim = tmp_path / "c.npz", tmp_path / "slim.npz"
    model, opt, _ = _save_small(path)
    full = tio.load_checkpoint(path)
    assert not full.weights_only and any(k.startswith("momentum.") for k in full.optim_state)
    out, before, after = tio.save_weights_only(path, slim)
    assert out == slim and before == path.stat().st_size and after == slim.stat().st_size
    ckpt = tio.load_checkpoint(slim)
    assert ckpt.weights_only
    assert sorted(ckpt.optim_state) == sorted(k for k in full.optim_state if not k.startswith("momentum."))
    assert int(ckpt.optim_state["step_count"]) == int(full.optim_state["step_count"]) > 0
    assert (ckpt.config, ckpt.epoch, ckpt.schedule, ckpt.rng_state, ckpt.metrics) == \
        (full.config, full.epoch, full.schedule, full.rng_state, full.metrics)
    for name, value in full.model_state.items():
        np.testing.assert_array_equal(ckpt.model_state[name], value)
    # the buffers are as large as the weights: about half of the file goes
    weight_bytes = sum(v.nbytes for v in full.model_state.values())
    momentum_bytes = sum(v.nbytes for k, v in full.optim_state.items() if k.startswith("momentum."))
    assert before - after >= momentum_bytes > weight_bytes // 2

    # in place: once written, a weights-only file is left untouched
    data = slim.read_bytes()
    assert tio.save_weights_only(slim, slim) == (slim, after, after) and slim.read_bytes() == data
    tio.save_weights_only(path, path)
    assert tio.load_checkpoint(path).weights_only and path.stat().st_size == after
    # the PyTorch export's num_batches_tracked still is the step count
    tio.export_torch(slim, tmp_path / "t.npz")
    with np.load(tmp_path / "t.npz") as z:
        counts = {int(z[k]) for k in z.files if k.endswith("num_batches_tracked")}
    assert counts == {int(full.optim_state["step_count"])}


def test_split_checkpoint_is_two_halves_that_resume_as_one(tmp_path):
    path = tmp_path / "last.npz"
    _save_small(path)
    full = tio.load_checkpoint(path)
    size = path.stat().st_size
    out, side, before, after = tio.split_checkpoint(path, path)
    assert (out, side, before) == (path, tmp_path / "last.momentum.npz", size)
    assert after == path.stat().st_size + side.stat().st_size
    # each half well under the whole (the buffers are as large as the weights)
    assert max(path.stat().st_size, side.stat().st_size) < 0.7 * size
    slim = tio.load_checkpoint(path)
    assert slim.weights_only
    restored = {**slim.optim_state, **tio.load_momentum(slim)}
    assert sorted(restored) == sorted(full.optim_state)
    for key, value in full.optim_state.items():
        np.testing.assert_array_equal(restored[key], value)
    for name, value in full.model_state.items():
        np.testing.assert_array_equal(slim.model_state[name], value)

    # again in place: a split pair is left as it is
    pair = path.read_bytes(), side.read_bytes()
    assert tio.split_checkpoint(path, path)[1:] == (side, path.stat().st_size, after)
    assert (path.read_bytes(), side.read_bytes()) == pair
    with pytest.raises(tio.CheckpointError, match="is split already .* copy the two files"):
        tio.split_checkpoint(path, tmp_path / "elsewhere.npz")

    # a momentum file of another state is refused, naming both epochs
    other = tmp_path / "other.npz"
    _save_small(other, epoch=4)
    tio.split_checkpoint(other, other)
    with pytest.raises(tio.CheckpointError, match=r"belongs to epoch 4 .* is epoch 3 .*not one state"):
        tio.load_momentum(slim, tmp_path / "other.momentum.npz")
    side.write_bytes(b"half a file")
    with pytest.raises(tio.CheckpointError, match="momentum file .*not a readable .npz"):
        tio.load_momentum(slim)
    side.unlink()
    with pytest.raises(tio.CheckpointError, match="holds the weights only and there is no .*last.momentum.npz"):
        tio.load_momentum(slim)
    # a weights-only checkpoint (no buffers anywhere) cannot be split
    with pytest.raises(tio.CheckpointError, match="no .*last.momentum.npz"):
        tio.split_checkpoint(path, path)


def test_truncated_checkpoint_is_refused(tmp_path):
    path = tmp_path / "c.npz"
    _save_small(path)
    data = path.read_bytes()
    for cut in (len(data) // 2, len(data) - 30):
        path.write_bytes(data[:cut])
        with pytest.raises(tio.CheckpointError, match="truncated or corrupt"):
            tio.load_checkpoint(path)
    with pytest.raises(tio.CheckpointError, match="file not found"):
        tio.load_checkpoint(tmp_path / "absent.npz")


def test_checkpoint_of_another_model_is_refused(tmp_path):
    path = tmp_path / "c.npz"
    _save_small(path)
    ckpt = tio.load_checkpoint(path)
    with pytest.raises(tio.CheckpointError, match=r"saved from a small model\) does not fit this model.*missing keys"):
        tio.load_state_into(get_model("resnet20"), ckpt.model_state, f"checkpoint {path}", "small")


def test_plain_state_dict_is_not_a_checkpoint_but_gives_weights(tmp_path):
    model = get_model("small", seed=3)
    path = tmp_path / "plain.npz"
    np.savez(path, **model.state_dict())
    with pytest.raises(tio.CheckpointError, match="not a tqref checkpoint"):
        tio.load_checkpoint(path)
    state, name = tio.read_weights(path)
    assert name is None
    np.testing.assert_array_equal(state["0.weight"], model.state_dict()["0.weight"])


def test_check_writable_dir(tmp_path, readonly_dir):
    assert tio.check_writable_dir(tmp_path / "new" / "run") is True
    assert tio.check_writable_dir(tmp_path / "new" / "run") is False
    with pytest.raises(PermissionError, match="is not writable"):
        tio.check_writable_dir(readonly_dir / "run")


# ---------------------------------------------------------------- export to PyTorch
def _ternary_resnet20():
    ternary = pytest.importorskip("tqref.ternary")
    return ternary.ternarize_model(get_model("resnet20", seed=1), t_ex=2)


def test_torch_state_dict_holds_effective_weights():
    model, _ = _trained(_ternary_resnet20(), steps=1)
    state = tio.torch_state_dict(model, num_batches_tracked=1)
    layer = model.layer2[0].conv1
    np.testing.assert_array_equal(state["layer2.0.conv1.weight"], layer.effective_weight())
    assert not np.array_equal(state["layer2.0.conv1.weight"], layer.params["weight"])
    # t_ex = 2: a symmetric 5-level quantizer of the latent weight (Eq. 5)
    assert len(np.unique(state["layer2.0.conv1.weight"])) == 5
    assert state["bn1.num_batches_tracked"].dtype == np.int64 and state["bn1.num_batches_tracked"] == 1
    assert state["linear.weight"].shape == (10, 64) and state["conv1.weight"].dtype == np.float32


@pytest.mark.parametrize("ternary", [False, True], ids=["full-precision", "ternary"])
def test_pytorch_resnet20_reproduces_tqref(tmp_path, ternary):
    torch, net = torch_cifar_resnet(20)
    if ternary:
        model = _ternary_resnet20()
        config = {"model": "resnet20", "ternary": True, "t_ex": 2}
    else:
        model = get_model("resnet20", seed=1)
        config = {"model": "resnet20", "ternary": False, "t_ex": 1}
    model, opt = _trained(model, steps=3)
    ckpt = tmp_path / "c.npz"
    tio.save_checkpoint(ckpt, model, config, optimizer=opt, epoch=1)
    out, n_arrays, name = tio.export_torch(ckpt, tmp_path / "torch.npz")
    assert name == "resnet20"

    with np.load(out, allow_pickle=False) as z:
        state = {k: torch.from_numpy(z[k]) for k in z.files}
    assert n_arrays == len(state)
    net.load_state_dict(state, strict=True)  # every key, every shape, nothing extra
    net.eval()
    torch.set_num_threads(1)
    x = np.random.default_rng(5).standard_normal((6, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    got = model.eval().forward(x)
    assert np.abs(expected).max() > 0.1
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    if ternary:
        w = net.layer1[0].conv1.weight.detach().numpy()
        assert len(np.unique(w)) == 5


@pytest.mark.parametrize("depth", [32, 44, 56])
def test_pytorch_resnets_of_every_depth_take_the_export(depth):
    """The deeper ResNets of the paper's table: the export fits the PyTorch
    network of the same depth key for key, and both give the same logits."""
    torch, net = torch_cifar_resnet(depth)
    model = get_model(f"resnet{depth}", seed=2).eval()
    state = {k: torch.from_numpy(v) for k, v in tio.torch_state_dict(model).items()}
    net.load_state_dict(state, strict=True)
    net.eval()
    x = np.random.default_rng(6).standard_normal((2, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    assert np.abs(expected).max() > 0.01
    np.testing.assert_allclose(model.forward(x), expected, rtol=1e-4, atol=1e-4)


def test_torch_reference_refuses_other_depths():
    with pytest.raises(ValueError, match=r"depth: expected one of \(20, 32, 44, 56\), got 18"):
        torch_cifar_resnet(18)
