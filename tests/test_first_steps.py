"""results/first_steps.py, the probe behind the ResNet-32/44/56 runs' first
epoch at lr 0.01: its steps are the trainer's (same initial network, same
batches, same update), and its table is what those steps give."""

import importlib.util
import math
from pathlib import Path

import pytest

from tqref.data import Batches, load_cifar10, write_synthetic_cifar10
from tqref.functional import softmax_cross_entropy
from tqref.train import TrainConfig, Trainer

REPO_ROOT = Path(__file__).resolve().parents[1]

spec = importlib.util.spec_from_file_location("first_steps", REPO_ROOT / "results" / "first_steps.py")
first_steps = importlib.util.module_from_spec(spec)
spec.loader.exec_module(first_steps)


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory):
    return write_synthetic_cifar10(tmp_path_factory.mktemp("cifar"), images_per_batch=64)


@pytest.mark.long
def test_its_steps_are_the_trainers(cifar_root, tmp_path):
    data = load_cifar10(cifar_root, verbose=False)
    losses, accuracies = first_steps.first_steps(data, "resnet20", 0.1, True, steps=5)
    # the same three steps, taken here on a trainer of the same config
    trainer = Trainer(TrainConfig(model="resnet20", ternary=True, lr=0.1, seed=0), tmp_path / "run",
                      data=data, log=lambda line: None, progress=False)
    trainer.model.train()
    expected = []
    for epoch in range(2):  # 320 synthetic images: 3 batches of 128, 128, 64 per epoch
        for x, y in Batches(trainer.train_images, trainer.train_labels, 128, rng=trainer.rng, shuffle=True,
                            augment=True):
            loss, dlogits = softmax_cross_entropy(trainer.model.forward(x), y)
            trainer.model.backward(dlogits)
            trainer.optimizer.step()
            expected.append(loss)
    assert losses == expected[:5] and len(accuracies) == 5 and all(0 <= a <= 1 for a in accuracies)


@pytest.mark.long
def test_the_table(cifar_root, capsys):
    first_steps.main(["--data-dir", str(cifar_root), "--models", "small", "--lrs", "0.1", "0.01",
                      "--steps", "10"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"first 10 steps, batch 128, seed 0; chance: loss ln 10 = {math.log(10):.3f}")
    rows = [line.strip("|").split(" | ") for line in lines if line.startswith("| small")]
    assert [row[1:3] for row in rows] == [["full precision", "0.1"], ["full precision", "0.01"],
                                          ["ternary", "0.1"], ["ternary", "0.01"]]
    for row in rows:
        first, largest, mean_loss, accuracy = map(float, row[3:])
        assert first <= largest and mean_loss <= largest and 0 <= accuracy <= 1
    # both learning rates start from the same network and batch: the same first loss
    assert rows[0][3] == rows[1][3] and rows[2][3] == rows[3][3]


def test_too_few_steps_is_refused(capsys):
    with pytest.raises(SystemExit):
        first_steps.main(["--steps", "5"])
    assert "--steps: expected at least 10 (the last 10 are averaged), got 5" in capsys.readouterr().err
