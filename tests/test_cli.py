"""The command line, in process (``tqref.cli.main``) on a synthetic CIFAR-10
folder: every command once, and every kind of bad input giving one readable
``error:`` line and a non-zero status, with nothing already written changed."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tqref import data
from tqref.cli import main

TRAIN = ["train", "--model", "small", "--epochs", "2", "--batch-size", "32", "--train-subset", "96",
         "--no-progress"]


@pytest.fixture(scope="module")
def cifar(tmp_path_factory):
    return data.write_synthetic_cifar10(tmp_path_factory.mktemp("cifar"), images_per_batch=32)


@pytest.fixture(scope="module")
def run(cifar, tmp_path_factory):
    """A finished two-epoch run of the small net (shared by the read-only commands)."""
    out = tmp_path_factory.mktemp("runs") / "small"
    assert main(TRAIN + ["--data-dir", str(cifar), "--out", str(out)]) == 0
    return out


def _error(capsys, argv, status=2):
    """Run ``main(argv)``, expect ``status`` and return the error line."""
    assert main(argv) == status
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("error: "), err
    return err[-1]


# ---------------------------------------------------------------- help
def test_help_is_fast_and_imports_nothing_heavy():
    code = ("import sys; from tqref.cli import build_parser; build_parser().format_help(); "
            "print(sorted(m for m in ('numpy', 'numba', 'matplotlib', 'tqref.train') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("command, words", [
    ([], ["train", "evaluate", "summary", "plot", "export", "download", "demo", "TQREF_DATA"]),
    (["train"], ["--ternary", "--t-ex", "--resume", "--init-from", "--milestones", "--no-nesterov",
                 "--train-subset", "--warmup-epochs", "paper's recipe", "default 3e-4"]),
    (["evaluate"], ["--json", "top-1"]),
    (["summary"], ["--model", "CKPT"]),
    (["plot"], ["sparsity.png", "weights.png"]),
    (["export"], ["--format", "PyTorch", "alpha*T"]),
])
def test_help_texts(capsys, command, words):
    with pytest.raises(SystemExit) as exit_:
        main(command + ["--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for word in words:
        assert word in text, word


# ---------------------------------------------------------------- commands
def test_train_writes_a_run(run, capsys):
    assert sorted(p.name for p in run.iterdir()) == ["best.npz", "config.json", "last.npz", "log.jsonl",
                                                     "result.json"]
    assert [json.loads(line)["epoch"] for line in (run / "log.jsonl").read_text().splitlines()] == [1, 2]


def test_train_prints_a_line_per_epoch(cifar, tmp_path, capsys):
    assert main(TRAIN + ["--epochs", "1", "--data-dir", str(cifar), "--out", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert "train: small full precision" in out and "epoch   1/1" in out and "test loss" in out
    assert "done: best test top-1" in out


def test_backend_flag_on_train_and_evaluate(run, cifar, tmp_path, capsys):
    """--backend reference: printed in the header, recorded in config.json, and the
    evaluation of the same checkpoint gives the fast backend's accuracy."""
    out = tmp_path / "r"
    assert main(TRAIN + ["--epochs", "1", "--backend", "reference", "--data-dir", str(cifar),
                         "--out", str(out)]) == 0
    assert "backend reference, run folder" in capsys.readouterr().out
    assert json.loads((out / "config.json").read_text())["backend"] == "reference"
    results = {}
    for backend in ("reference", "fast"):
        assert main(["evaluate", str(run / "last.npz"), "--data-dir", str(cifar), "--json",
                     "--backend", backend]) == 0
        results[backend] = json.loads(capsys.readouterr().out)
        assert results[backend]["backend"] == backend
    assert results["reference"]["top1"] == results["fast"]["top1"]
    assert abs(results["reference"]["loss"] - results["fast"]["loss"]) < 1e-5
    with pytest.raises(SystemExit):
        main(["evaluate", str(run / "last.npz"), "--backend", "gpu"])
    assert "argument --backend: invalid choice: 'gpu' (choose from 'fast', 'reference')" in capsys.readouterr().err


def test_evaluate_json(run, cifar, capsys):
    assert main(["evaluate", str(run / "last.npz"), "--data-dir", str(cifar), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"top1", "top5", "model", "ternary", "t_ex", "checkpoint"} <= set(out)
    assert (out["model"], out["ternary"], out["t_ex"], out["test_images"]) == ("small", False, 1, 32)
    logged = json.loads((run / "log.jsonl").read_text().splitlines()[-1])
    assert out["top1"] == logged["test_top1"] and out["top5"] == logged["test_top5"]


def test_evaluate_text(run, cifar, capsys):
    assert main(["evaluate", str(run / "best.npz"), "--data-dir", str(cifar), "--no-progress",
                 "--test-subset", "10"]) == 0
    assert "test top-1" in capsys.readouterr().out


def test_resume_continues_a_run(cifar, tmp_path, capsys):
    out = tmp_path / "r"
    assert main(TRAIN + ["--epochs", "1", "--data-dir", str(cifar), "--out", str(out)]) == 0
    assert main(["train", "--out", str(out), "--resume", "--epochs", "2", "--no-progress"]) == 0
    assert "resuming" in capsys.readouterr().out
    assert [json.loads(line)["epoch"] for line in (out / "log.jsonl").read_text().splitlines()] == [1, 2]


def test_resume_a_run_stopped_in_its_first_epoch(run, tmp_path, capsys):
    # what an interrupt in epoch 1 leaves: the settings only (the CLI's own hint
    # after an interrupt is "continue with --resume", which must work here too)
    out = tmp_path / "r"
    out.mkdir()
    (out / "config.json").write_bytes((run / "config.json").read_bytes())
    assert main(["train", "--out", str(out), "--resume", "--no-progress"]) == 0
    assert "stopped before its first epoch ended, so it starts again from its saved settings" in \
        capsys.readouterr().out
    assert [json.loads(line)["epoch"] for line in (out / "log.jsonl").read_text().splitlines()] == [1, 2]
    # the same settings and seed: the same run as the fixture's
    assert (json.loads((out / "log.jsonl").read_text().splitlines()[-1])["test_top1"]
            == json.loads((run / "log.jsonl").read_text().splitlines()[-1])["test_top1"])


def test_summary(run, capsys):
    pytest.importorskip("tqref.summary")
    assert main(["summary", str(run / "last.npz")]) == 0
    assert "Conv2d" in capsys.readouterr().out
    assert main(["summary", "--model", "small", "--json"]) == 0
    assert isinstance(json.loads(capsys.readouterr().out), dict)


def test_summary_without_the_summary_module(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tqref.summary", None)  # import now raises ImportError
    line = _error(capsys, ["summary", "--model", "small"])
    assert "tqref.summary is not available" in line


def test_plot(run, tmp_path, capsys):
    assert main(["plot", str(run), "--out", str(tmp_path / "fig")]) == 0
    written = capsys.readouterr().out.split()
    assert sorted(Path(p).name for p in written) == ["curves.png", "lr.png", "weights.png"]
    for p in written:
        assert Path(p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and Path(p).stat().st_size > 5000


def test_plot_ternary_run(cifar, tmp_path, capsys):
    pytest.importorskip("tqref.ternary")
    out = tmp_path / "t"
    assert main(TRAIN + ["--ternary", "--t-ex", "2", "--data-dir", str(cifar), "--out", str(out)]) == 0
    assert main(["plot", str(out)]) == 0
    names = sorted(Path(p).name for p in capsys.readouterr().out.split() if p.endswith(".png"))
    assert names == ["curves.png", "lr.png", "sparsity.png", "weights.png"]
    record = json.loads((out / "log.jsonl").read_text().splitlines()[-1])
    assert 0 < record["sparsity"] < 1 and len(record["layers"]) == 4
    assert main(["evaluate", str(out / "last.npz"), "--data-dir", str(cifar), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["ternary"] is True and result["t_ex"] == 2


def test_export(run, tmp_path, capsys):
    out = tmp_path / "torch.npz"
    assert main(["export", str(run / "last.npz"), str(out), "--format", "torch"]) == 0
    assert "wrote" in capsys.readouterr().out
    with np.load(out, allow_pickle=False) as z:
        assert "0.weight" in z.files and "1.num_batches_tracked" in z.files


def test_demo_still_runs(cifar, capsys):
    assert main(["demo", "--data-dir", str(cifar), "--train-images", "64", "--test-images", "32",
                 "--epochs", "1", "--batch-size", "32"]) == 0
    assert "test accuracy after training" in capsys.readouterr().out


# ---------------------------------------------------------------- bad input
def test_missing_data_folder(tmp_path, capsys):
    line = _error(capsys, TRAIN + ["--data-dir", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r")])
    assert "CIFAR-10 not found" in line and str(tmp_path / "nowhere" / data.FOLDER) in line
    assert "python -m tqref download" in line
    assert not (tmp_path / "r").exists()


def test_corrupt_batch_file(cifar, tmp_path, capsys):
    bad = data.write_synthetic_cifar10(tmp_path / "bad", images_per_batch=8)
    path = bad / data.FOLDER / "data_batch_2"
    path.write_bytes(path.read_bytes()[:500])
    line = _error(capsys, TRAIN + ["--data-dir", str(bad), "--out", str(tmp_path / "r")])
    assert "data_batch_2" in line and "truncated or corrupt" in line
    assert not (tmp_path / "r").exists()


def test_wrong_image_shape(tmp_path, capsys):
    import pickle
    bad = data.write_synthetic_cifar10(tmp_path / "bad", images_per_batch=8)
    (bad / data.FOLDER / "test_batch").write_bytes(
        pickle.dumps({b"data": np.zeros((8, 1024), np.uint8), b"labels": [0] * 8}))
    line = _error(capsys, ["evaluate", "x.npz", "--data-dir", str(bad)])  # the checkpoint is checked first
    assert "x.npz: file not found" in line
    (tmp_path / "r").mkdir()
    line = _error(capsys, TRAIN + ["--data-dir", str(bad), "--out", str(tmp_path / "r")])
    assert "test_batch: b'data': expected uint8 array of shape (N, 3072)" in line


@pytest.mark.parametrize("argv, message", [
    (["--model", "resnet18"], "unknown model 'resnet18': choose one of resnet20, resnet32, resnet44, resnet56, small"),
    (["--epochs", "-3"], "epochs: expected a positive integer, got -3"),
    (["--t-ex", "2"], "add --ternary"),
    (["--train-subset", "100000"], "train-subset: asked for 100000 images, but the train set has 160"),
])
def test_bad_settings(cifar, tmp_path, capsys, argv, message):
    line = _error(capsys, TRAIN + argv + ["--data-dir", str(cifar), "--out", str(tmp_path / "r")])
    assert message in line
    assert not (tmp_path / "r").exists()


def test_truncated_checkpoint(run, tmp_path, capsys):
    bad = tmp_path / "cut.npz"
    bad.write_bytes((run / "last.npz").read_bytes()[:3000])
    for argv in (["evaluate", str(bad)], ["export", str(bad), str(tmp_path / "o.npz")],
                 ["summary", str(bad)]):
        if argv[0] == "summary":
            pytest.importorskip("tqref.summary")
        assert "truncated or corrupt" in _error(capsys, argv)
    assert not (tmp_path / "o.npz").exists()


def test_checkpoint_of_another_model(run, cifar, tmp_path, capsys):
    line = _error(capsys, TRAIN + ["--model", "resnet20", "--init-from", str(run / "last.npz"),
                                   "--data-dir", str(cifar), "--out", str(tmp_path / "r")])
    assert "saved from a small model" in line and "does not fit this model" in line
    assert not (tmp_path / "r").exists()


def test_existing_run_is_refused_without_resume(run, cifar, capsys):
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    line = _error(capsys, TRAIN + ["--data-dir", str(cifar), "--out", str(run)])
    assert "already exists and is not empty" in line and "--resume" in line
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before


def test_resume_problems(run, tmp_path, capsys):
    assert "nothing to resume" in _error(capsys, ["train", "--out", str(tmp_path / "none"), "--resume"])
    line = _error(capsys, ["train", "--out", str(run), "--resume", "--lr", "0.5"])
    assert "differ from the ones given: lr=" in line


def test_read_only_output_folder(cifar, readonly_dir, capsys):
    line = _error(capsys, TRAIN + ["--data-dir", str(cifar), "--out", str(readonly_dir / "run")])
    assert "is not writable" in line and str(readonly_dir / "run") in line


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_diverging_run_exits_1_and_keeps_its_checkpoint(cifar, tmp_path, capsys):
    out = tmp_path / "r"
    assert main(TRAIN + ["--epochs", "1", "--data-dir", str(cifar), "--out", str(out)]) == 0
    # make the run's next epoch diverge: a learning rate of 1e30 from epoch 2 on
    with np.load(out / "last.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    config = json.loads(str(arrays["config"]))
    config.update(milestones=[1], gammas=[1e30])
    arrays["config"] = np.array(json.dumps(config))
    np.savez(out / "last.npz", **arrays)
    before = (out / "last.npz").read_bytes()
    line = _error(capsys, ["train", "--out", str(out), "--resume", "--epochs", "2", "--no-progress"], status=1)
    assert "training diverged" in line and "still holds the last good state (epoch 1)" in line
    assert (out / "last.npz").read_bytes() == before


def test_export_packed_and_evaluate_it(cifar, tmp_path, capsys):
    """A ternary ResNet-20 run exported as a packed file evaluates to the same
    accuracy as its checkpoint, through the add-only engine."""
    out = tmp_path / "r20t"
    argv = ["train", "--model", "resnet20", "--ternary", "--epochs", "1", "--batch-size", "32",
            "--train-subset", "64", "--no-progress", "--data-dir", str(cifar), "--out", str(out)]
    assert main(argv) == 0
    packed = tmp_path / "r20t_packed.npz"
    capsys.readouterr()
    assert main(["export", str(out / "last.npz"), str(packed), "--format", "packed"]) == 0
    assert "bytes (2bit codes, BN folded)" in capsys.readouterr().out
    results = []
    for path in (out / "last.npz", packed):
        assert main(["evaluate", str(path), "--json", "--data-dir", str(cifar)]) == 0
        results.append(json.loads(capsys.readouterr().out))
    assert results[1]["top1"] == results[0]["top1"]
    assert results[1]["model"] == "resnet20" and results[1]["ternary"] and results[1]["t_ex"] == 1
    assert abs(results[1]["loss"] - results[0]["loss"]) < 1e-4
    # the checkpoint carries optimiser state too; compare with the float32 state dict on disk
    from tqref.io import load_model
    model, _ = load_model(out / "last.npz")
    np.savez(tmp_path / "fp32.npz", **model.state_dict())
    assert packed.stat().st_size * 14 <= (tmp_path / "fp32.npz").stat().st_size

    # a run still training, as results/ keeps it between sessions: split in two
    full_size = (out / "last.npz").stat().st_size
    halves = tmp_path / "halves"
    halves.mkdir()
    assert main(["export", str(out / "last.npz"), str(halves / "last.npz"), "--format", "split"]) == 0
    said = capsys.readouterr().out
    assert f"{halves / 'last.momentum.npz'} (its momentum buffers)" in said and f"({full_size:,} bytes)" in said
    assert max(p.stat().st_size for p in halves.iterdir()) < 0.6 * full_size
    # the checkpoint as results/ publishes it: in place, without momentum buffers
    assert main(["export", str(out / "last.npz"), str(out / "last.npz"), "--format", "weights"]) == 0
    said = capsys.readouterr().out
    assert f"({full_size:,} bytes) without its momentum buffers" in said and "cannot be resumed" in said
    assert (out / "last.npz").stat().st_size < 0.6 * full_size
    assert main(["export", str(out / "last.npz"), str(out / "last.npz"), "--format", "weights"]) == 0
    assert "already holds the weights only: left as it is" in capsys.readouterr().out
    assert main(["evaluate", str(out / "last.npz"), "--json", "--data-dir", str(cifar)]) == 0
    assert json.loads(capsys.readouterr().out)["top1"] == results[0]["top1"]
    assert main(["export", str(out / "last.npz"), str(tmp_path / "p2.npz"), "--format", "packed"]) == 0
    assert "weights only)" in capsys.readouterr().out
    line = _error(capsys, ["train", "--out", str(out), "--resume", "--epochs", "2", "--no-progress"])
    assert "holds the weights only" in line and "--init-from" in line
