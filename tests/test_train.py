"""The trainer: the paper's defaults, what a run folder holds, exact resume,
fine-tuning, and faults (NaN loss, failed writes, occupied or unwritable
folders).  Runs use the small model on a few hundred synthetic images."""

import json
import os

import numpy as np
import pytest

from tqref import io as tio
from tqref import train as train_module
from tqref.data import load_cifar10, write_synthetic_cifar10
from tqref.train import TrainConfig, Trainer, TrainingDiverged, evaluate, read_log, ternary_stats


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A synthetic CIFAR-10 folder: 5 × 64 training images, 64 test images."""
    root = write_synthetic_cifar10(tmp_path_factory.mktemp("cifar"), images_per_batch=64)
    return load_cifar10(root, verbose=False)


def _config(**kw):
    base = dict(model="small", epochs=3, batch_size=64, lr=0.05, train_subset=256)
    base.update(kw)
    return TrainConfig(**base)


DEFAULT = object()


def _trainer(data, run_dir, config=DEFAULT, **kw):
    return Trainer(_config() if config is DEFAULT else config, run_dir, data=data, log=lambda line: None,
                   progress=False, **kw)


def _npz(path):
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


# ---------------------------------------------------------------- settings
def test_defaults_are_the_papers_recipe():
    c = TrainConfig()
    assert (c.model, c.epochs, c.batch_size, c.lr, c.momentum, c.nesterov, c.weight_decay) == \
        ("resnet20", 200, 128, 0.1, 0.9, True, 3e-4)
    assert c.augment and c.eval_batch_size == 256 and c.schedule == "multistep"
    sched = c.make_schedule()
    lrs = [sched.lr_at(e) for e in (0, 79, 80, 119, 120, 159, 160, 199)]
    np.testing.assert_allclose(lrs, [0.1, 0.1, 0.01, 0.01, 0.001, 0.001, 0.0005, 0.0005])


def test_warmup_and_cosine():
    sched = TrainConfig(warmup_epochs=3).make_schedule()
    np.testing.assert_allclose([sched.lr_at(e) for e in range(5)], [0.025, 0.05, 0.075, 0.1, 0.1])
    cos = TrainConfig(schedule="cosine", epochs=10).make_schedule()
    assert cos.lr_at(0) == 0.1 and cos.lr_at(5) == pytest.approx(0.05)


@pytest.mark.parametrize("kw, message", [
    ({"epochs": -1}, "epochs: expected a positive integer, got -1"),
    ({"epochs": 0}, "epochs: expected a positive integer"),
    ({"model": "resnet18"}, "unknown model 'resnet18': choose one of resnet20, resnet32"),
    ({"t_ex": 2}, "apply to ternary models: add --ternary"),
    ({"lr": float("nan")}, "lr: expected a finite number"),
    ({"train_subset": 0}, "train-subset: expected a positive integer"),
    ({"milestones": (120, 80)}, "strictly increasing"),
])
def test_bad_settings(kw, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**kw).validate()


def test_config_round_trips_through_json():
    c = _config(milestones=(2, 3), gammas=(0.1, 0.5))
    again = TrainConfig.from_dict(json.loads(json.dumps(c.to_dict())))
    assert again == c
    with pytest.raises(ValueError, match="unknown setting"):
        TrainConfig.from_dict({"model": "small", "colour": "red"})


# ---------------------------------------------------------------- a run
def test_run_folder_contents(data, tmp_path):
    run = tmp_path / "run"
    result = _trainer(data, run, _config(milestones=(2,), gammas=(0.1,))).fit()
    assert sorted(p.name for p in run.iterdir()) == ["best.npz", "config.json", "last.npz", "log.jsonl",
                                                     "result.json"]
    log = read_log(run)
    assert [r["epoch"] for r in log] == [1, 2, 3]
    assert [r["lr"] for r in log] == pytest.approx([0.05, 0.05, 0.005])  # epoch index 2 >= milestone 2
    keys = {"epoch", "lr", "train_loss", "train_acc", "test_loss", "test_top1", "test_top5", "images_per_s",
            "epoch_seconds"}
    assert all(keys <= set(r) for r in log)
    assert all(0 <= r["test_top1"] <= r["test_top5"] <= 1 and r["images_per_s"] > 0 for r in log)

    best = max(log, key=lambda r: r["test_top1"])
    assert result["best_epoch"] == best["epoch"] and result["best_top1"] == best["test_top1"]
    assert result["final_top1"] == log[-1]["test_top1"]
    assert json.loads((run / "result.json").read_text()) == result
    config = json.loads((run / "config.json").read_text())
    assert config["model"] == "small" and config["train_subset"] == 256
    # config.json as read is the settings plus what the run recorded beside them
    assert set(config) - set(TrainConfig().to_dict()) == set(TrainConfig.RECORDED_BESIDE) \
        == {"data_root", "backend"}
    assert config["backend"] == "fast"  # the default backend trained it
    assert TrainConfig.from_dict(config).to_dict() == {k: v for k, v in config.items()
                                                      if k not in TrainConfig.RECORDED_BESIDE}

    last, best_ckpt = tio.load_checkpoint(run / "last.npz"), tio.load_checkpoint(run / "best.npz")
    assert last.epoch == 3 and best_ckpt.epoch == result["best_epoch"]
    assert last.metrics["best_top1"] == result["best_top1"] and last.config["model"] == "small"
    assert last.optim_state["step_count"] == 3 * 4  # 256 images / batch 64, three epochs
    # the checkpoint's weights evaluate to the logged accuracy
    model, _ = tio.load_model(run / "last.npz")
    again = evaluate(model, data["test_images"], data["test_labels"])
    assert again["top1"] == log[-1]["test_top1"] and again["loss"] == pytest.approx(log[-1]["test_loss"])


@pytest.mark.long
def test_training_learns_real_cifar10(tmp_path):
    if not os.environ.get("TQREF_DATA"):
        pytest.skip("TQREF_DATA not set")
    real = load_cifar10(verbose=False)
    config = _config(epochs=3, batch_size=64, lr=0.05, train_subset=1024, test_subset=500, schedule="cosine")
    result = _trainer(real, tmp_path / "run", config).fit()
    log = read_log(tmp_path / "run")
    assert log[-1]["train_loss"] < log[0]["train_loss"] < 2.3
    assert result["best_top1"] > 0.25  # chance is 0.10


def test_evaluate_counts_top1_and_top5(data):
    model = tio.model_from_config({"model": "small"})
    images, labels = data["test_images"][:40], data["test_labels"][:40]
    got = evaluate(model, images, labels, batch_size=16)
    logits = model.eval().forward(__import__("tqref.data", fromlist=["x"]).normalize(images))
    rank = (logits > logits[np.arange(40), labels][:, None]).sum(axis=1)
    assert got["top1"] == np.mean(rank == 0) and got["top5"] == np.mean(rank < 5)
    assert model.training is False  # evaluate restores the mode it found (eval here)


# ---------------------------------------------------------------- exact resume
class Interrupt(Exception):
    pass


def _stop_after(epoch):
    def hook(done, record):
        if done == epoch:
            raise Interrupt
    return hook


@pytest.mark.parametrize("ternary, split", [(False, False), (True, False), (True, True)],
                         ids=["full-precision", "ternary", "ternary-split-checkpoint"])
def test_resume_is_bit_identical(data, tmp_path, ternary, split):
    if ternary:
        pytest.importorskip("tqref.ternary")
    config = _config(ternary=ternary, t_ex=2 if ternary else 1, milestones=(2,), gammas=(0.1,))
    _trainer(data, tmp_path / "straight", config).fit()

    with pytest.raises(Interrupt):
        _trainer(data, tmp_path / "stopped", config).fit(on_epoch_end=_stop_after(1))
    assert tio.load_checkpoint(tmp_path / "stopped" / "last.npz").epoch == 1
    side = tmp_path / "stopped" / "last.momentum.npz"
    if split:  # as a run still training is committed: two halves (export --format split)
        tio.split_checkpoint(tmp_path / "stopped" / "last.npz", tmp_path / "stopped" / "last.npz")
        assert tio.load_checkpoint(tmp_path / "stopped" / "last.npz").weights_only and side.is_file()
    resumed = _trainer(data, tmp_path / "stopped", None, resume=True)
    assert resumed.start_epoch == 1
    resumed.fit()
    assert not side.exists()  # the full checkpoint of epoch 2 superseded the pair

    a, b = _npz(tmp_path / "straight" / "last.npz"), _npz(tmp_path / "stopped" / "last.npz")
    assert a.keys() == b.keys() and any(k.startswith("optim/momentum.") for k in a)
    for key in a:
        assert np.array_equal(a[key], b[key]), key  # weights, BN statistics, momentum, RNG state, metrics
    strip = ("images_per_s", "epoch_seconds")
    log_a = [{k: v for k, v in r.items() if k not in strip} for r in read_log(tmp_path / "straight")]
    log_b = [{k: v for k, v in r.items() if k not in strip} for r in read_log(tmp_path / "stopped")]
    assert log_a == log_b
    if ternary:
        assert {"sparsity", "layers"} <= set(log_a[0])
        assert len(log_a[0]["layers"]["0"]["alpha"]) == 2


def test_resume_trims_log_lines_past_the_checkpoint(data, tmp_path):
    run = tmp_path / "run"
    with pytest.raises(Interrupt):
        _trainer(data, run, _config(epochs=2)).fit(on_epoch_end=_stop_after(1))
    # a run killed after appending epoch 2's log line but before its checkpoint
    with open(run / "log.jsonl", "a") as f:
        f.write(json.dumps({"epoch": 2, "test_top1": 0.99}) + "\n" + '{"epoch": 3, "test_')
    _trainer(data, run, None, resume=True).fit()
    log = read_log(run)
    assert [r["epoch"] for r in log] == [1, 2] and log[1]["test_top1"] != 0.99


@pytest.mark.parametrize("init_from", [False, True], ids=["from-scratch", "fine-tune"])
def test_resume_before_the_first_checkpoint_starts_the_run_again(data, tmp_path, init_from):
    config = _config(epochs=2)
    if init_from:
        _trainer(data, tmp_path / "start", _config(epochs=1)).fit()
        config = _config(epochs=2, lr=0.01, init_from=str(tmp_path / "start" / "last.npz"))
    _trainer(data, tmp_path / "straight", config).fit()
    # killed during epoch 1: the constructor wrote config.json, no checkpoint yet;
    # and a log line of epoch 1 that its checkpoint never followed
    stopped = tmp_path / "stopped"
    _trainer(data, stopped, config)
    assert sorted(p.name for p in stopped.iterdir()) == ["config.json"]
    (stopped / "log.jsonl").write_text(json.dumps({"epoch": 1, "test_top1": 0.99}) + "\n")
    with pytest.raises(FileExistsError, match="already exists and is not empty"):
        _trainer(data, stopped, config)
    with pytest.raises(ValueError, match=r"differ from the ones given: lr="):
        _trainer(data, stopped, {"lr": 0.5}, resume=True)  # its settings hold, as for any resume
    resumed = _trainer(data, stopped, None, resume=True)
    assert resumed.start_epoch == 0 and resumed.checkpoint is None
    resumed.fit()
    a, b = _npz(tmp_path / "straight" / "last.npz"), _npz(stopped / "last.npz")
    assert a.keys() == b.keys()
    for key in a:
        assert np.array_equal(a[key], b[key]), key  # the run it would have been
    assert [r["epoch"] for r in read_log(stopped)] == [1, 2] and read_log(stopped)[0]["test_top1"] != 0.99


def test_resume_may_extend_but_not_change_a_run(data, tmp_path):
    run = tmp_path / "run"
    _trainer(data, run, _config(epochs=1)).fit()
    with pytest.raises(ValueError, match=r"differ from the ones given: lr=0.05 \(asked 0.1\)"):
        _trainer(data, run, {"lr": 0.1}, resume=True)
    _trainer(data, run, {"epochs": 2, "lr": 0.05, "model": "small"}, resume=True).fit()
    assert [r["epoch"] for r in read_log(run)] == [1, 2]
    with pytest.raises(FileNotFoundError, match="no checkpoint .*last.npz.*nothing to resume"):
        _trainer(data, tmp_path / "elsewhere", None, resume=True)


def test_a_weights_only_checkpoint_is_not_resumed_but_starts_a_new_run(data, tmp_path):
    run = tmp_path / "run"
    _trainer(data, run, _config(epochs=1)).fit()
    full = tio.load_checkpoint(run / "last.npz")
    tio.save_weights_only(run / "last.npz", run / "last.npz")  # as the published runs are
    before = (run / "last.npz").read_bytes()
    with pytest.raises(tio.CheckpointError, match=r"holds the weights only .* cannot continue exactly.*"
                                                  r"--init-from .*last.npz --out NEW_FOLDER"):
        _trainer(data, run, {"epochs": 2}, resume=True)
    assert (run / "last.npz").read_bytes() == before and [r["epoch"] for r in read_log(run)] == [1]
    tuned = _trainer(data, tmp_path / "tuned", _config(epochs=1, init_from=str(run / "last.npz")))
    for name, value in tuned.model.state_dict().items():
        np.testing.assert_array_equal(value, full.model_state[name])


# ---------------------------------------------------------------- fine-tuning
def test_init_from_full_precision_into_ternary(data, tmp_path):
    pytest.importorskip("tqref.ternary")
    _trainer(data, tmp_path / "fp", _config(epochs=1)).fit()
    ckpt = tio.load_checkpoint(tmp_path / "fp" / "best.npz")
    tuned = _trainer(data, tmp_path / "tern", _config(epochs=1, ternary=True, t_ex=2,
                                                      init_from=str(tmp_path / "fp" / "best.npz")))
    assert tio.ternary_layers(tuned.model)  # converted
    for name, value in tuned.model.state_dict().items():
        np.testing.assert_array_equal(value, ckpt.model_state[name])  # latent weights = FP weights
    tuned.fit()
    assert json.loads((tmp_path / "tern" / "config.json").read_text())["init_from"].endswith("best.npz")


def test_init_from_another_model_fails_before_training(data, tmp_path):
    path = tmp_path / "r20.npz"
    np.savez(path, **tio.model_from_config({"model": "resnet20"}).state_dict())
    with pytest.raises(tio.CheckpointError, match=r"--init-from .*r20.npz does not fit this model"):
        _trainer(data, tmp_path / "run", _config(init_from=str(path)))
    assert not (tmp_path / "run").exists()  # the failed start left nothing behind


# ---------------------------------------------------------------- faults
def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(data, tmp_path, monkeypatch):
    run = tmp_path / "run"
    trainer = _trainer(data, run)
    real_loss = train_module.softmax_cross_entropy
    calls = {"n": 0}

    def loss_going_nan(logits, labels):
        calls["n"] += 1
        loss, dlogits = real_loss(logits, labels)
        # 4 training steps and 1 test batch per epoch: call 7 is epoch 2, step 2
        return (float("nan") if calls["n"] == 7 else loss), dlogits

    monkeypatch.setattr(train_module, "softmax_cross_entropy", loss_going_nan)
    with pytest.raises(TrainingDiverged, match=r"loss became nan at epoch 2, step 2/4 .*last.npz still holds "
                                               r"the last good state \(epoch 1\).*smaller --lr"):
        trainer.fit()
    assert tio.load_checkpoint(run / "last.npz").epoch == 1
    assert [r["epoch"] for r in read_log(run)] == [1]
    assert not (run / "result.json").exists()


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_exploding_weights_are_caught(data, tmp_path):
    with pytest.raises(TrainingDiverged, match="at epoch 1.*no checkpoint was written yet"):
        _trainer(data, tmp_path / "run", _config(lr=1e30)).fit()


def test_failed_checkpoint_write_keeps_the_previous_one(data, tmp_path, monkeypatch):
    run = tmp_path / "run"
    trainer = _trainer(data, run)
    trainer.train_epoch(0)
    before = (run / "last.npz").read_bytes()
    real_replace = os.replace

    def replace_fails_for_last(src, dst):
        if str(dst).endswith("last.npz"):
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace_fails_for_last)
    with pytest.raises(OSError, match="No space left"):
        trainer.train_epoch(1)
    assert (run / "last.npz").read_bytes() == before
    assert tio.load_checkpoint(run / "last.npz").epoch == 1
    assert not [p for p in run.iterdir() if p.name.startswith(".")]  # no temporary files


def test_existing_run_is_not_overwritten(data, tmp_path):
    run = tmp_path / "run"
    _trainer(data, run, _config(epochs=1)).fit()
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    with pytest.raises(FileExistsError, match="already exists and is not empty.*--resume"):
        _trainer(data, run, _config(epochs=1))
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before
    (tmp_path / "empty").mkdir()
    _trainer(data, tmp_path / "empty", _config(epochs=1))  # an empty folder is fine


def test_unwritable_run_folder_fails_before_training(data, tmp_path, monkeypatch):
    monkeypatch.setattr(train_module.Trainer, "_setup", lambda *a: pytest.fail("got past the folder check"))
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(FileExistsError):
        _trainer(data, target)  # a file where the folder should be
    monkeypatch.setattr(tio.tempfile, "mkstemp", lambda **kw: (_ for _ in ()).throw(PermissionError(13, "denied")))
    with pytest.raises(PermissionError, match=r"run folder .*run is not writable"):
        _trainer(data, tmp_path / "run")


def test_ternary_stats_match_the_codes():
    ternary = pytest.importorskip("tqref.ternary")
    model = ternary.ternarize_model(tio.model_from_config({"model": "small"}), t_ex=2)
    overall, layers = ternary_stats(model)
    layer = dict(tio.ternary_layers(model))["4"]
    q = layer.quantize()
    assert layers["4"]["sparsity"] == [np.mean(q[0].codes == 0), np.mean(q[1].codes == 0)]
    assert layers["4"]["alpha"][1] == pytest.approx(float(q[1].alpha))
    zeros = sum(int(np.sum(m.quantize()[0].codes == 0)) for _, m in tio.ternary_layers(model))
    size = sum(m.params["weight"].size for _, m in tio.ternary_layers(model))
    assert overall == zeros / size
