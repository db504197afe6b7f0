"""CIFAR-10 loading: lookup order, safe unpickling, checksums, download from
a local file:// URL (never the network), format errors."""

import hashlib
import os
import pickle
import tarfile

import numpy as np
import pytest

from tqref import data
from tqref.data import DataError


def _batch_bytes(n=10, seed=0, protocol=2):
    rng = np.random.default_rng(seed)
    raw = {b"batch_label": b"testing batch",
           b"labels": [int(v) for v in rng.integers(0, 10, n)],
           b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
           b"filenames": [b"x.png"] * n}
    return pickle.dumps(raw, protocol=protocol)


def _make_folder(root, n=10):
    folder = root / data.FOLDER
    folder.mkdir(parents=True)
    for i, name in enumerate(data.TRAIN_FILES + (data.TEST_FILE,)):
        (folder / name).write_bytes(_batch_bytes(n, seed=i))
    return root


def test_load_batch_shapes_and_planes(tmp_path):
    path = tmp_path / "b"
    path.write_bytes(_batch_bytes(4))
    images, labels = data.load_batch(path)
    raw = pickle.loads(path.read_bytes())
    assert images.shape == (4, 3, 32, 32) and images.dtype == np.uint8
    # row layout: 1024 red values, then green, then blue, each row-major 32×32
    np.testing.assert_array_equal(images[2, 1, 5, 7], raw[b"data"][2, 1024 + 5 * 32 + 7])
    np.testing.assert_array_equal(labels, raw[b"labels"])


def test_restricted_unpickler_refuses_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))
    path = tmp_path / "evil"
    path.write_bytes(pickle.dumps({b"data": Evil(), b"labels": []}, protocol=2))
    with pytest.raises(DataError, match="refusing to load global '(posix|os).system'"):
        data.load_batch(path)
    assert not (tmp_path / "pwned").exists()


def test_truncated_and_malformed_batches(tmp_path):
    path = tmp_path / "b"
    path.write_bytes(_batch_bytes(4)[:5000])
    with pytest.raises(DataError, match="truncated or corrupt"):
        data.load_batch(path)
    path.write_bytes(pickle.dumps({b"data": np.zeros((4, 1024), np.uint8), b"labels": [0] * 4}))
    with pytest.raises(DataError, match=r"expected uint8 array of shape \(N, 3072\), found uint8 of shape \(4, 1024\)"):
        data.load_batch(path)
    path.write_bytes(pickle.dumps({b"data": np.zeros((4, 3072), np.uint8), b"labels": [0, 1, 2, 11]}))
    with pytest.raises(DataError, match="b'labels': expected 4 integers in 0..9"):
        data.load_batch(path)
    path.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(DataError, match="expected a dict"):
        data.load_batch(path)


def test_lookup_order(tmp_path, monkeypatch):
    a, b, cache = _make_folder(tmp_path / "a"), _make_folder(tmp_path / "b"), tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    monkeypatch.setenv("TQREF_DATA", str(b))
    assert data.find_cifar10(a) == a          # --data-dir first
    assert data.find_cifar10() == b            # then TQREF_DATA
    monkeypatch.delenv("TQREF_DATA")
    _make_folder(cache / "tqref")
    assert data.find_cifar10() == cache / "tqref"  # then the cache


def test_missing_data_message_says_where_and_how(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("TQREF_DATA", str(tmp_path / "env"))
    with pytest.raises(DataError) as err:
        data.find_cifar10()
    msg = str(err.value)
    assert str(tmp_path / "env" / data.FOLDER) in msg and str(tmp_path / "cache") in msg
    assert "--data-dir" in msg and "python -m tqref download" in msg
    # an explicit --data-dir that lacks the folder is an error even if TQREF_DATA has it
    monkeypatch.setenv("TQREF_DATA", str(_make_folder(tmp_path / "good")))
    with pytest.raises(DataError, match="--data-dir"):
        data.find_cifar10(tmp_path / "typo")


def _archive(tmp_path):
    src = _make_folder(tmp_path / "src", n=3)
    archive = tmp_path / "cifar.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src / data.FOLDER, arcname=data.FOLDER)
    return archive, hashlib.md5(archive.read_bytes()).hexdigest()


def test_download_from_local_url_checks_md5_and_extracts(tmp_path):
    archive, md5 = _archive(tmp_path)
    root = tmp_path / "cache"
    data.download_cifar10(root, url=archive.as_uri(), md5=md5, progress=False)
    images, labels = data.load_batch(root / data.FOLDER / "data_batch_3")
    assert images.shape == (3, 3, 32, 32)
    assert not [p for p in root.iterdir() if p.name.startswith(".")]  # no temporary leftovers


def test_download_with_wrong_md5_leaves_nothing(tmp_path):
    archive, _ = _archive(tmp_path)
    root = tmp_path / "cache"
    with pytest.raises(DataError, match="MD5 .* does not match"):
        data.download_cifar10(root, url=archive.as_uri(), md5="0" * 32, progress=False)
    assert list(root.iterdir()) == []


def test_rebuilt_copy_is_accepted_with_a_note(tmp_path, capsys):
    root = _make_folder(tmp_path / "d", n=5)
    loaded = data.load_cifar10(root)
    assert loaded["train_images"].shape == (25, 3, 32, 32)
    assert "differ from the official MD5s" in capsys.readouterr().err


def test_normalize_uses_paper_constants():
    images = np.zeros((1, 3, 2, 2), np.uint8)
    images[0, 0] = 255
    out = data.normalize(images)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[0, 0, 0, 0], (1 - 125.3 / 255) / (63.0 / 255), rtol=1e-6)
    np.testing.assert_allclose(out[0, 2, 0, 0], (0 - 113.9 / 255) / (66.7 / 255), rtol=1e-6)


@pytest.mark.skipif(not os.environ.get("TQREF_DATA"), reason="TQREF_DATA not set")
def test_shared_cifar10_copy_loads():
    loaded = data.load_cifar10(verbose=False)
    assert loaded["train_images"].shape == (50000, 3, 32, 32)
    assert loaded["test_images"].shape == (10000, 3, 32, 32)
    assert np.bincount(loaded["train_labels"]).tolist() == [5000] * 10
    assert np.bincount(loaded["test_labels"]).tolist() == [1000] * 10


def test_load_cifar10_names_a_truncated_batch_file(tmp_path):
    root = data.write_synthetic_cifar10(tmp_path / "d", images_per_batch=8)
    path = root / data.FOLDER / "data_batch_3"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(DataError, match=r"data_batch_3: not a readable CIFAR-10 batch \(truncated or corrupt"):
        data.load_cifar10(root, verbose=False)


def test_load_cifar10_rejects_a_wrong_image_shape(tmp_path):
    root = data.write_synthetic_cifar10(tmp_path / "d", images_per_batch=8)
    (root / data.FOLDER / "test_batch").write_bytes(
        pickle.dumps({b"data": np.zeros((8, 32, 32, 3), np.uint8), b"labels": [0] * 8}))
    with pytest.raises(DataError, match=r"test_batch: b'data': expected uint8 array of shape \(N, 3072\), "
                                        r"found uint8 of shape \(8, 32, 32, 3\)"):
        data.load_cifar10(root, verbose=False)


def test_synthetic_copy_has_the_cifar_layout(tmp_path):
    root = data.write_synthetic_cifar10(tmp_path / "d", images_per_batch=6, seed=1)
    loaded = data.load_cifar10(root, verbose=False)
    assert loaded["train_images"].shape == (30, 3, 32, 32) and loaded["test_images"].shape == (6, 3, 32, 32)
    assert loaded["train_labels"].dtype == np.int64 and loaded["train_labels"].max() <= 9
    again = data.load_cifar10(data.write_synthetic_cifar10(tmp_path / "e", 6, seed=1), verbose=False)
    np.testing.assert_array_equal(loaded["train_images"], again["train_images"])


def test_a_subset_copy_loads_like_the_full_set(tmp_path, capsys):
    full = data.load_cifar10(data.write_synthetic_cifar10(tmp_path / "full", images_per_batch=20), verbose=False)
    root = data.write_cifar10_subset(tmp_path / "small", full, train=37, test=9)
    small = data.load_cifar10(root, verbose=True)
    assert "is a subset of CIFAR-10 (SUBSET.json)" in capsys.readouterr().err  # not "differ from the MD5s"
    np.testing.assert_array_equal(small["train_images"], full["train_images"][:37])
    np.testing.assert_array_equal(small["train_labels"], full["train_labels"][:37])
    np.testing.assert_array_equal(small["test_images"], full["test_images"][:9])
    np.testing.assert_array_equal(small["test_labels"], full["test_labels"][:9])
    with pytest.raises(FileExistsError, match="already exists"):
        data.write_cifar10_subset(tmp_path / "small", full, train=5, test=5)
    with pytest.raises(ValueError, match=r"train: expected an integer in \[1, 100\], got 101"):
        data.write_cifar10_subset(tmp_path / "other", full, train=101, test=5)
    assert not (tmp_path / "other" / data.FOLDER).exists()
