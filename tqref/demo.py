"""A short, honest training run: a small network learns a CIFAR-10 subset.

This is the whole training step of a hand-written-backprop framework, in
one screen of code:

    logits = model.forward(x)
    loss, dlogits = softmax_cross_entropy(logits, y)
    model.backward(dlogits)
    optimizer.step()
"""

import time

import numpy as np

from tqref.data import load_cifar10, normalize
from tqref.functional import softmax_cross_entropy
from tqref.models import get_model
from tqref.optim import SGD, CosineLR
from tqref.validation import check_positive_int


def accuracy(model, images, labels, batch_size=256):
    """Top-1 accuracy of ``model`` (evaluation mode) on uint8 images."""
    model.eval()
    correct = 0
    for start in range(0, len(images), batch_size):
        logits = model.forward(normalize(images[start:start + batch_size], model.dtype))
        correct += int(np.sum(logits.argmax(axis=1) == labels[start:start + batch_size]))
    model.train()
    return correct / len(images)


def run_demo(model="small", train_images=2048, test_images=1000, epochs=8, batch_size=64, lr=0.05,
             seed=0, data_dir=None, log=print):
    """Train ``model`` on the first ``train_images`` CIFAR-10 training images
    and report loss per epoch and test accuracy.  Returns the list of epoch losses."""
    for name, value in [("train_images", train_images), ("test_images", test_images),
                        ("epochs", epochs), ("batch_size", batch_size)]:
        check_positive_int(value, f"demo: {name}")
    data = load_cifar10(data_dir, download=True)
    x_train, y_train = data["train_images"][:train_images], data["train_labels"][:train_images]
    x_test, y_test = data["test_images"][:test_images], data["test_labels"][:test_images]
    net = get_model(model, seed=seed)
    optimizer = SGD(net.parameters_and_gradients(), lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    schedule = CosineLR(lr, epochs)
    rng = np.random.default_rng(seed)
    steps_per_epoch = int(np.ceil(len(x_train) / batch_size))
    log(f"demo: {model} ({net.num_parameters():,} parameters), {len(x_train)} training images "
        f"from {data['root']}, {epochs} epochs, batch {batch_size}")
    log(f"test accuracy before training: {accuracy(net, x_test, y_test):.3f}")
    losses = []
    for epoch in range(epochs):
        order = rng.permutation(len(x_train))
        total, seen, start_time = 0.0, 0, time.perf_counter()
        for step in range(steps_per_epoch):
            optimizer.lr = schedule.lr_at(epoch + step / steps_per_epoch)
            idx = order[step * batch_size:(step + 1) * batch_size]
            x = normalize(x_train[idx], net.dtype)
            logits = net.forward(x)
            loss, dlogits = softmax_cross_entropy(logits, y_train[idx])
            net.backward(dlogits)
            optimizer.step()
            total += loss * len(idx)
            seen += len(idx)
        losses.append(total / seen)
        rate = seen / (time.perf_counter() - start_time)
        log(f"epoch {epoch + 1:2d}/{epochs}  train loss {losses[-1]:.4f}  ({rate:.0f} images/s)")
    log(f"test accuracy after training: {accuracy(net, x_test, y_test):.3f} "
        f"(first {len(x_test)} test images)")
    return losses
