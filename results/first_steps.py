"""The first training steps of each CIFAR ResNet at two learning rates: why
the ResNet-32/44/56 runs of results/ start with one epoch at lr 0.01.

    python results/first_steps.py                 # the table in results/README.md (~10 min, 1 thread)
    python results/first_steps.py --steps 20 --models resnet56 --lrs 0.1

Each network starts from the trainer's initial weights for seed 0 (He
fan-out init, as ``python -m tqref train --seed 0`` draws them) and takes
the trainer's first ``--steps`` steps with the recipe's optimiser (SGD,
Nesterov momentum 0.9, weight decay 3e-4, batch 128, random crop and flip)
on its shuffled CIFAR-10 batches, full precision and ternarized (t_ex = 1).  Printed per run:
the loss of the first step, the largest loss of any step, the mean loss and
accuracy of the last 10 steps.  A network that has learned something sits
clearly below ln 10 = 2.303 (chance) by then; one whose first steps threw it
far off (the loss jumps to 10 or 20) sits at chance, predicting one class.

He et al. (2016) met this with ResNet-110 at lr 0.1 and warmed up at 0.01
for about 400 steps (one epoch); this script shows where it begins for the
depths of the paper's table.  Nothing is kept on disk.
"""

import argparse
import math
import os
import tempfile
from pathlib import Path

if __name__ == "__main__":
    # one thread, as the training runs; only when run as a script, and before numpy and numba
    # load (imported, e.g. by its test, it must leave a running numba's thread count alone)
    for _name in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(_name, "1")

import numpy as np  # noqa: E402  (after the thread settings)

from tqref.data import Batches, load_cifar10  # noqa: E402
from tqref.functional import softmax_cross_entropy  # noqa: E402
from tqref.train import TrainConfig, Trainer  # noqa: E402


def first_steps(data, model_name, lr, ternary, steps, seed=0):
    """Losses and accuracies of the first ``steps`` training steps, as two lists.

    The network, optimiser and batches are the trainer's own (``Trainer``
    builds them from the config and seed; its run folder is a temporary one),
    and each step is the one ``Trainer.train_epoch`` takes."""
    config = TrainConfig(model=model_name, ternary=ternary, lr=lr, seed=seed)
    with tempfile.TemporaryDirectory() as folder:
        trainer = Trainer(config, Path(folder) / "run", data=data, log=lambda line: None, progress=False)
    model, optimizer = trainer.model.train(), trainer.optimizer
    losses, accuracies = [], []
    while len(losses) < steps:  # one epoch's batches at a time, drawn as the trainer draws them
        for x, y in Batches(trainer.train_images, trainer.train_labels, config.batch_size, rng=trainer.rng,
                            shuffle=True, augment=config.augment, dtype=model.dtype):
            logits = model.forward(x)
            loss, dlogits = softmax_cross_entropy(logits, y)
            model.backward(dlogits)
            optimizer.step()
            losses.append(loss)
            accuracies.append(float(np.mean(logits.argmax(axis=1) == y)))
            if len(losses) == steps:
                break
    return losses, accuracies


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["resnet20", "resnet32", "resnet44", "resnet56"])
    parser.add_argument("--lrs", nargs="+", type=float, default=[0.1, 0.01])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args(argv)
    if args.steps < 10:
        parser.error(f"--steps: expected at least 10 (the last 10 are averaged), got {args.steps}")

    data = load_cifar10(args.data_dir, verbose=False)
    print(f"first {args.steps} steps, batch 128, seed 0; chance: loss ln 10 = {math.log(10):.3f}, accuracy 0.10\n")
    print("| model | weights | lr | loss, step 1 | largest loss | mean loss, last 10 steps "
          "| accuracy, last 10 steps |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for model_name in args.models:
        for ternary in (False, True):
            for lr in args.lrs:
                losses, accuracies = first_steps(data, model_name, lr, ternary, args.steps)
                print(f"| {model_name} | {'ternary' if ternary else 'full precision'} | {lr:g} "
                      f"| {losses[0]:.2f} | {max(losses):.2f} | {np.mean(losses[-10:]):.2f} "
                      f"| {np.mean(accuracies[-10:]):.2f} |", flush=True)


if __name__ == "__main__":
    main()
