"""Augmentation (random crop of the zero-padded image + horizontal flip) and
batching: the Numba kernel against its naive twin and against hand-worked
cases, the one-call draw, seeding, and the epoch iterator."""

import numpy as np
import pytest

from tqref import data
from tqref.data import Batches, DataError, draw_crop_flip, random_crop_flip
from tqref.data import crop_flip as crop_flip_naive
from tqref.kernels.augment import crop_flip


def _images(n=5, h=32, w=32, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 3, h, w), dtype=np.uint8)


@pytest.mark.parametrize("fn", [crop_flip, crop_flip_naive])
def test_hand_worked_cases(fn):
    x = _images(3)
    p = 4
    flips = np.array([0, 1, 0])
    offsets = np.array([[p, p], [p, p], [0, 2 * p]])
    out = fn(x, flips, offsets, p)
    assert out.dtype == np.uint8 and out.shape == x.shape
    np.testing.assert_array_equal(out[0], x[0])                 # centre window, no flip: identity
    np.testing.assert_array_equal(out[1], x[1][:, :, ::-1])     # centre window, flipped
    # window at the top-right corner of the padded image: the image moves down 4 and left 4
    np.testing.assert_array_equal(out[2, :, :p, :], 0)
    np.testing.assert_array_equal(out[2, :, :, -p:], 0)
    np.testing.assert_array_equal(out[2, :, p:, :-p], x[2, :, :-p, p:])


def test_crop_then_flip_order():
    # crop first, then mirror the crop (torchvision's RandomCrop + RandomHorizontalFlip)
    x = _images(1)
    out = crop_flip(x, np.array([1]), np.array([[4, 0]]), 4)
    shifted = crop_flip(x, np.array([0]), np.array([[4, 0]]), 4)
    np.testing.assert_array_equal(out, shifted[:, :, :, ::-1])


@pytest.mark.parametrize("shape, padding", [((7, 3, 32, 32), 4), ((1, 3, 32, 32), 4),
                                            ((4, 3, 9, 13), 2), ((3, 1, 5, 5), 0), ((6, 3, 8, 8), 6)])
def test_kernel_equals_naive(shape, padding):
    rng = np.random.default_rng(sum(shape) + padding)
    x = rng.integers(0, 256, shape, dtype=np.uint8)
    flips, offsets = draw_crop_flip(rng, shape[0], padding)
    np.testing.assert_array_equal(crop_flip(x, flips, offsets, padding),
                                  crop_flip_naive(x, flips, offsets, padding))


def test_kernel_equals_naive_on_a_large_batch():
    # large enough for the parallel path (> 2^16 entries, several threads)
    rng = np.random.default_rng(1)
    x = _images(128, seed=1)
    flips, offsets = draw_crop_flip(rng, 128)
    np.testing.assert_array_equal(crop_flip(x, flips, offsets, 4), crop_flip_naive(x, flips, offsets, 4))


def test_draw_is_one_call_and_seeded():
    rng = np.random.default_rng(3)
    flips, offsets = draw_crop_flip(rng, 4000)
    # one vectorised call: the same stream as a single rng.integers over (n, 3)
    ref = np.random.default_rng(3).integers(0, (2, 9, 9), size=(4000, 3))
    np.testing.assert_array_equal(flips, ref[:, 0].astype(bool))
    np.testing.assert_array_equal(offsets, ref[:, 1:])
    assert offsets.min() == 0 and offsets.max() == 8
    assert 0.45 < flips.mean() < 0.55
    assert sorted(np.unique(offsets[:, 0])) == list(range(9))


def test_random_crop_flip_uses_the_draw_and_the_kernel():
    x = _images(16)
    out = random_crop_flip(x, np.random.default_rng(5))
    flips, offsets = draw_crop_flip(np.random.default_rng(5), 16)
    np.testing.assert_array_equal(out, crop_flip_naive(x, flips, offsets, 4))
    assert not np.array_equal(out, random_crop_flip(x, np.random.default_rng(6)))


def test_bad_augmentation_input():
    x = _images(2)
    with pytest.raises(ValueError, match="uint8 array"):
        crop_flip(x.astype(np.float32), np.zeros(2), np.zeros((2, 2), int), 4)
    with pytest.raises(ValueError, match=r"offsets: expected integers in \[0, 8\]"):
        crop_flip(x, np.zeros(2, int), np.array([[0, 9], [0, 0]]), 4)
    with pytest.raises(ValueError, match=r"flips: expected \(2,\)"):
        crop_flip_naive(x, np.zeros(3, int), np.zeros((2, 2), int), 4)


# ---------------------------------------------------------------- batching
def _indexed(n):
    """Images whose pixels and labels tell which image they are."""
    images = np.zeros((n, 3, 32, 32), np.uint8)
    images[:] = (np.arange(n) % 256)[:, None, None, None]
    return images, np.arange(n)


def test_batches_cover_each_image_once_in_shuffled_order():
    images, labels = _indexed(70)
    batches = Batches(images, labels, 32, rng=np.random.default_rng(0), shuffle=True)
    got = list(batches)
    assert len(batches) == 3 and [len(y) for _, y in got] == [32, 32, 6]
    seen = np.concatenate([y for _, y in got])
    assert sorted(seen) == list(range(70)) and not np.array_equal(seen, np.arange(70))
    x0, y0 = got[0]
    assert x0.dtype == np.float32 and x0.shape == (32, 3, 32, 32)
    np.testing.assert_allclose(x0, data.normalize(images[y0]))  # x and y stay paired
    # the permutation is the Generator's
    np.testing.assert_array_equal(seen, np.random.default_rng(0).permutation(70))


def test_batches_are_reproducible_and_advance_the_generator():
    images, labels = _indexed(40)
    rng_a, rng_b = np.random.default_rng(7), np.random.default_rng(7)
    epoch_a = [x for x, _ in Batches(images, labels, 16, rng=rng_a, shuffle=True, augment=True)]
    epoch_b = [x for x, _ in Batches(images, labels, 16, rng=rng_b, shuffle=True, augment=True)]
    for a, b in zip(epoch_a, epoch_b):
        np.testing.assert_array_equal(a, b)
    assert rng_a.bit_generator.state == rng_b.bit_generator.state
    # the next epoch differs (the generator moved on)
    second = [x for x, _ in Batches(images, labels, 16, rng=rng_a, shuffle=True, augment=True)]
    assert not np.array_equal(second[0], epoch_a[0])


def test_batches_augment_with_the_same_generator_after_the_shuffle():
    images = _images(10)
    labels = np.zeros(10, np.int64)
    (x, _), = Batches(images, labels, 10, rng=np.random.default_rng(2), shuffle=True, augment=True)
    rng = np.random.default_rng(2)
    order = rng.permutation(10)
    flips, offsets = draw_crop_flip(rng, 10)
    np.testing.assert_array_equal(x, data.normalize(crop_flip_naive(images[order], flips, offsets, 4)))


def test_batches_in_order_without_rng_and_drop_last():
    images, labels = _indexed(10)
    got = [y for _, y in Batches(images, labels, 4)]
    assert [list(y) for y in got] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert len(Batches(images, labels, 4, drop_last=True)) == 2


def test_batches_bad_input():
    images, labels = _indexed(4)
    with pytest.raises(DataError, match=r"expected uint8 array \(N, 3, H, W\)"):
        Batches(images.transpose(0, 2, 3, 1), labels, 2)
    with pytest.raises(DataError, match="labels: expected 4 integers"):
        Batches(images, labels[:3], 2)
    with pytest.raises(ValueError, match="batch_size: expected a positive integer"):
        Batches(images, labels, 0)
    with pytest.raises(TypeError, match="numpy.random.Generator"):
        Batches(images, labels, 2, shuffle=True)
