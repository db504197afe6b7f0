"""CIFAR-10: find, verify, download, load (safely), normalise, augment, batch.

Where the data comes from, in this order (each names the folder that
*contains* ``cifar-10-batches-py/``, as torchvision's ``root`` does):

    1. the ``data_dir`` argument (``--data-dir`` on the command line)
    2. the environment variable ``TQREF_DATA``
    3. tqref's cache directory (``$XDG_CACHE_HOME/tqref`` or ``~/.cache/tqref``),
       where ``download_cifar10`` puts the official archive when online

Images stay uint8 (N, 3, 32, 32) in memory (150 MB for the training set
instead of 600 MB as float32); a batch is augmented (``random_crop_flip``)
and normalised with the paper's mean and std only when it is used.  An
epoch is one pass of ``Batches``:

    batches = Batches(images, labels, batch_size=128, rng=rng, shuffle=True, augment=True)
    for x, y in batches:        # x float32 (B, 3, 32, 32) normalised, y int64 (B,)
        ...

Every random choice of an epoch (the shuffle, then each batch's flips and
crop offsets) is drawn from the one ``numpy.random.Generator`` passed in, so
saving ``rng.bit_generator.state`` between epochs is enough to replay a run.

The batch files are pickles from the internet.  A pickle can run arbitrary
code when loaded, so they are read with ``_RestrictedUnpickler``, which
admits only what the CIFAR format needs: dicts, lists, bytes, str, int and
NumPy's array reconstruction.
"""

import codecs
import hashlib
import io
import json
import os
import pickle
import shutil
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

import numpy as np

FOLDER = "cifar-10-batches-py"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
ARCHIVE_NAME = "cifar-10-python.tar.gz"
ARCHIVE_MD5 = "c58f30108f718f92721af3b95e74349a"
ARCHIVE_BYTES = 170_498_071
OFFICIAL_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
}

# The paper's normalisation (method.md): per-channel mean and std of CIFAR-10.
MEAN = np.array([125.3, 123.0, 113.9]) / 255.0
STD = np.array([63.0, 62.1, 66.7]) / 255.0


class DataError(ValueError):
    """Missing, truncated, corrupt or malformed data, with a message that
    says what was expected and what to do."""


# ---------------------------------------------------------------- locating
def default_cache_dir():
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "tqref"


def candidate_roots(data_dir=None):
    """The folders searched, in order, as (label, Path) pairs."""
    roots = []
    if data_dir is not None:
        roots.append(("--data-dir", Path(data_dir)))
    if os.environ.get("TQREF_DATA"):
        roots.append(("TQREF_DATA", Path(os.environ["TQREF_DATA"])))
    roots.append(("cache", default_cache_dir()))
    return roots


def find_cifar10(data_dir=None, download=False):
    """Return the root folder holding ``cifar-10-batches-py/``.

    The first candidate that holds the folder wins.  An explicit
    ``data_dir`` that lacks it is an error even if a later candidate has it,
    so a typo is never silently replaced by other data.  With
    ``download=True`` the official archive is fetched into the cache when
    nothing is found.
    """
    roots = candidate_roots(data_dir)
    for label, root in roots:
        if (root / FOLDER).is_dir():
            return root
        if label == "--data-dir":
            raise DataError(_missing_message([(label, root)]))
    if download:
        try:
            return download_cifar10(default_cache_dir())
        except OSError as err:  # offline, DNS failure, refused connection, disk full
            raise DataError(f"{_missing_message(roots)} (The download failed: {err}.)") from None
    raise DataError(_missing_message(roots))


def _missing_message(roots):
    looked = "; ".join(f"{label}: {root / FOLDER}" for label, root in roots)
    return (
        f"CIFAR-10 not found. Looked for the folder '{FOLDER}' in: {looked}. "
        f"Pass --data-dir DIR (the folder that contains '{FOLDER}'), set TQREF_DATA=DIR, "
        f"or run 'python -m tqref download' to fetch {ARCHIVE_NAME} ({ARCHIVE_BYTES / 1e6:.0f} MB) "
        f"from {URL} into {default_cache_dir()}."
    )


# ---------------------------------------------------------------- checksums
def md5_of(path, chunk=1 << 20):
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def verify_folder(root):
    """Compare each batch file's MD5 with the official one.

    Returns the list of files whose MD5 differs.  A differing checksum is
    *not* an error: rebuilt copies (like the one tqref's CI uses) are
    legitimate; the loader's format checks catch corrupt files."""
    folder = Path(root) / FOLDER
    return [name for name, md5 in OFFICIAL_MD5.items()
            if (folder / name).is_file() and md5_of(folder / name) != md5]


# ---------------------------------------------------------------- download
def download_cifar10(root, url=URL, md5=ARCHIVE_MD5, progress=True):
    """Download the official archive into ``root``, check its MD5, extract it.

    Atomic: the archive goes to a temporary file that is renamed only after
    its checksum matches, and the folder is extracted into a temporary
    directory that is renamed into place, so an interrupted download leaves
    nothing half-written.  ``url`` may be a ``file://`` URL (the tests use
    one; they never touch the network).  Returns ``root``.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    archive = root / ARCHIVE_NAME
    if not (archive.is_file() and md5_of(archive) == md5):
        fd, tmp = tempfile.mkstemp(dir=root, prefix=".download-", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
                total = int(response.headers.get("Content-Length") or 0)
                bar = _progress_bar(total, f"downloading {ARCHIVE_NAME}") if progress else None
                for block in iter(lambda: response.read(1 << 20), b""):
                    out.write(block)
                    if bar is not None:
                        bar.update(len(block))
                if bar is not None:
                    bar.close()
            found = md5_of(tmp)
            if found != md5:
                raise DataError(f"download_cifar10: {url}: MD5 {found} does not match the expected {md5}; "
                                f"the download is corrupt or not the CIFAR-10 archive")
            os.replace(tmp, archive)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    extract_archive(archive, root)
    return root


def _progress_bar(total, desc):
    from tqdm import tqdm
    return tqdm(total=total or None, unit="B", unit_scale=True, desc=desc, file=sys.stderr)


def extract_archive(archive, root):
    """Extract ``cifar-10-batches-py/`` from the archive into ``root`` atomically."""
    root = Path(root)
    staging = Path(tempfile.mkdtemp(dir=root, prefix=".extract-"))
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = [m for m in tar.getmembers()
                       if m.isfile() and Path(m.name).parts[:1] == (FOLDER,) and ".." not in Path(m.name).parts]
            if not members:
                raise DataError(f"extract_archive: {archive}: holds no '{FOLDER}/' files")
            tar.extractall(staging, members=members, filter="data")
        target = root / FOLDER
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging / FOLDER, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# ---------------------------------------------------------------- loading
class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that refuses every global except NumPy's array rebuild.

    Plain containers (dict, list, bytes, str, int) need no global at all;
    an ndarray is rebuilt from ``numpy.core.multiarray._reconstruct``,
    ``numpy.ndarray`` and ``numpy.dtype``.  Anything else, such as
    ``os.system`` in a tampered file, raises ``pickle.UnpicklingError``
    before it can be called."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): np.ndarray.__reduce__(np.zeros(1))[0],
        ("numpy._core.multiarray", "_reconstruct"): np.ndarray.__reduce__(np.zeros(1))[0],
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        # Python 3 writes bytes as _codecs.encode(str, "latin1") under pickle
        # protocol 2, so a copy re-pickled in Python 3 needs it; it only encodes text.
        ("_codecs", "encode"): codecs.encode,
    }

    def find_class(self, module, name):
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load global '{module}.{name}': a CIFAR-10 batch holds only "
                f"dicts, lists, bytes, ints and NumPy arrays") from None


def safe_unpickle(data):
    """Unpickle ``data`` (bytes) with the restricted unpickler, bytes keys
    kept as bytes (``encoding="bytes"``, the CIFAR convention)."""
    return _RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()


def load_batch(path):
    """Read one batch file -> (images uint8 (N, 3, 32, 32), labels int64 (N,)).

    Each row of ``b'data'`` holds the red, green and blue 32×32 planes of one
    image, row-major, so a reshape to (N, 3, 32, 32) is exact (no copy)."""
    path = Path(path)
    try:
        raw = safe_unpickle(path.read_bytes())
    except FileNotFoundError:
        raise DataError(f"load_batch: {path}: file not found") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            KeyError, UnicodeDecodeError) as err:
        raise DataError(f"load_batch: {path}: not a readable CIFAR-10 batch (truncated or corrupt?): {err}") from None
    if not isinstance(raw, dict) or b"data" not in raw or b"labels" not in raw:
        found = sorted(raw)[:5] if isinstance(raw, dict) else type(raw).__name__
        raise DataError(f"load_batch: {path}: expected a dict with keys b'data' and b'labels', found {found}")
    data, labels = raw[b"data"], raw[b"labels"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        shape = getattr(data, "shape", None)
        dtype = getattr(data, "dtype", type(data).__name__)
        raise DataError(f"load_batch: {path}: b'data': expected uint8 array of shape (N, 3072), "
                        f"found {dtype} of shape {shape}")
    labels = np.asarray(labels)
    if labels.shape != (data.shape[0],) or labels.dtype.kind not in "iu" or \
            (labels.size and (labels.min() < 0 or labels.max() > 9)):
        raise DataError(f"load_batch: {path}: b'labels': expected {data.shape[0]} integers in 0..9, "
                        f"found shape {labels.shape}, dtype {labels.dtype}")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def load_cifar10(data_dir=None, download=False, verbose=True):
    """Load the whole data set.

    Returns a dict with ``train_images`` (50000, 3, 32, 32) uint8,
    ``train_labels`` (50000,) int64, ``test_images``, ``test_labels``
    (10000 each) and ``root`` (the folder used)."""
    root = find_cifar10(data_dir, download=download)
    folder = root / FOLDER
    if (folder / SUBSET_FILE).is_file():  # a small copy (write_cifar10_subset): no official MD5s to match
        if verbose:
            print(f"note: {folder} is a subset of CIFAR-10 ({SUBSET_FILE})", file=sys.stderr)
    else:
        differing = verify_folder(root)
        if differing and verbose:
            print(f"note: {len(differing)} CIFAR-10 file(s) in {folder} differ from the official MD5s "
                  f"(a rebuilt copy?); loading them anyway", file=sys.stderr)
    parts = [load_batch(folder / name) for name in TRAIN_FILES]
    test_images, test_labels = load_batch(folder / TEST_FILE)
    return {
        "train_images": np.concatenate([p[0] for p in parts]),
        "train_labels": np.concatenate([p[1] for p in parts]),
        "test_images": test_images,
        "test_labels": test_labels,
        "root": root,
    }


# ---------------------------------------------------------------- transforms
def normalize(images, dtype=np.float32):
    """uint8 (N, 3, H, W) -> float (N, 3, H, W): (x/255 − mean) / std per channel."""
    scale = (1.0 / (255.0 * STD)).astype(dtype)
    shift = (MEAN / STD).astype(dtype)
    out = images.astype(dtype)
    out *= scale[None, :, None, None]
    out -= shift[None, :, None, None]
    return out


# ---------------------------------------------------------------- augmentation
PAD = 4  # the paper's zero padding before the random 32×32 crop


def draw_crop_flip(rng, n, padding=PAD):
    """Draw the augmentation of ``n`` images in one vectorised call.

    Returns (flips (n,) bool, offsets (n, 2) int64 in [0, 2·padding]):
    column 0 of the draw is the coin for the flip, columns 1 and 2 the
    crop's top-left corner in the padded image."""
    draws = rng.integers(0, (2, 2 * padding + 1, 2 * padding + 1), size=(n, 3))
    return draws[:, 0].astype(bool), draws[:, 1:]


def crop_flip(images, flips, offsets, padding):
    """Random-crop-and-flip a uint8 batch with given draws.

    images:  uint8 (N, C, H, W)
    flips:   (N,) bool or 0/1 integers: mirror image n left-right
    offsets: (N, 2) integers in [0, 2·padding]: top-left corner (oy, ox) of
             the window in the padded image (padding, padding = no shift)
    padding: zero border width

        out[n, c, i, j] = x_pad[n, c, i + oy, j' + ox],   j' = W − 1 − j if flips[n] else j

    (crop first, then flip, as torchvision's RandomCrop + RandomHorizontalFlip).
    Returns a new uint8 array of the shape of ``images``.  The reference
    backend's version: pad, cut each image's window, mirror; the fast
    backend's is ``tqref.kernels.augment.crop_flip``.
    """
    flips, offsets, padding = check_crop_flip(images, flips, offsets, padding)
    N, C, H, W = images.shape
    padded = np.pad(images, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    out = np.empty_like(images)
    for n in range(N):
        oy, ox = offsets[n]
        window = padded[n, :, oy:oy + H, ox:ox + W]
        out[n] = window[:, :, ::-1] if flips[n] else window
    return out


def check_crop_flip(images, flips, offsets, padding):
    if not isinstance(images, np.ndarray) or images.ndim != 4 or images.dtype != np.uint8:
        raise ValueError(
            f"crop_flip: images: expected a uint8 array (N, C, H, W), got "
            f"{getattr(images, 'dtype', type(images).__name__)} of shape {getattr(images, 'shape', None)}")
    """Validate crop_flip's arguments; return (flips uint8, offsets int64, padding int)."""
    N = images.shape[0]
    flips = np.asarray(flips)
    offsets = np.asarray(offsets)
    if flips.shape != (N,) or flips.dtype.kind not in "biu":
        raise ValueError(f"crop_flip: flips: expected ({N},) booleans or 0/1 integers, "
                         f"got {flips.dtype} of shape {flips.shape}")
    if offsets.shape != (N, 2) or offsets.dtype.kind not in "iu":
        raise ValueError(f"crop_flip: offsets: expected ({N}, 2) integers, "
                         f"got {offsets.dtype} of shape {offsets.shape}")
    if isinstance(padding, bool) or not isinstance(padding, (int, np.integer)) or padding < 0:
        raise ValueError(f"crop_flip: padding: expected a non-negative integer, got {padding!r}")
    if N and (offsets.min() < 0 or offsets.max() > 2 * padding):
        raise ValueError(f"crop_flip: offsets: expected integers in [0, {2 * padding}] "
                         f"(2·padding), found [{offsets.min()}, {offsets.max()}]")
    return flips.astype(np.uint8), offsets.astype(np.int64), int(padding)


def random_crop_flip(images, rng, padding=PAD):
    """The paper's augmentation of a uint8 batch (N, 3, H, W): each image is
    cropped back to H×W at a random offset from its ``padding``-pixel
    zero-padded copy and mirrored left-right with probability 1/2.  The
    draws come from ``rng``; the copying is the backend's ``crop_flip``."""
    from tqref.backend import current_backend
    flips, offsets = draw_crop_flip(rng, len(images), padding)
    return current_backend().crop_flip(images, flips, offsets, padding)


# ---------------------------------------------------------------- batching
class Batches:
    """One epoch of mini-batches over uint8 images, ready for a model.

    images:     uint8 (N, 3, H, W);  labels: integers (N,)
    batch_size: images per batch; the last batch is smaller unless drop_last
    rng:        numpy Generator for the shuffle and the augmentation (needed
                when shuffle or augment is on)
    shuffle:    visit the images in the order ``rng.permutation(N)``
    augment:    apply ``random_crop_flip`` to each batch
    dtype:      float dtype of the normalised batches

    Iterating draws the permutation first, then one augmentation draw per
    batch, all from ``rng``; ``len(batches)`` is the number of batches.
    Yields (x float (B, 3, H, W) normalised, y int64 (B,)).
    """

    def __init__(self, images, labels, batch_size, rng=None, shuffle=False, augment=False,
                 dtype=np.float32, drop_last=False, padding=PAD):
        if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4 or \
                images.shape[1] != 3:
            raise DataError(f"Batches: images: expected uint8 array (N, 3, H, W), found "
                            f"{getattr(images, 'dtype', type(images).__name__)} of shape "
                            f"{getattr(images, 'shape', None)}")
        labels = np.asarray(labels)
        if labels.shape != (len(images),) or labels.dtype.kind not in "iu":
            raise DataError(f"Batches: labels: expected {len(images)} integers, "
                            f"found {labels.dtype} of shape {labels.shape}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
            raise ValueError(f"Batches: batch_size: expected a positive integer, got {batch_size!r}")
        if (shuffle or augment) and not isinstance(rng, np.random.Generator):
            raise TypeError("Batches: rng: shuffle and augment need a numpy.random.Generator, "
                            f"got {type(rng).__name__}")
        self.images, self.labels = images, labels.astype(np.int64, copy=False)
        self.batch_size, self.rng = int(batch_size), rng
        self.shuffle, self.augment, self.dtype = bool(shuffle), bool(augment), dtype
        self.drop_last, self.padding = bool(drop_last), padding

    def __len__(self):
        n, b = len(self.images), self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def __iter__(self):
        n = len(self.images)
        order = self.rng.permutation(n) if self.shuffle else None
        for k in range(len(self)):
            start = k * self.batch_size
            if order is None:
                x, y = self.images[start:start + self.batch_size], self.labels[start:start + self.batch_size]
            else:
                idx = order[start:start + self.batch_size]
                x, y = self.images[idx], self.labels[idx]
            if self.augment:
                x = random_crop_flip(x, self.rng, self.padding)
            yield normalize(x, self.dtype), y


# ---------------------------------------------------------------- small copies
SUBSET_FILE = "SUBSET.json"  # written beside the batches of a subset (write_cifar10_subset)


def _write_folder(root, train_images, train_labels, test_images, test_labels, label, extra=None):
    """Write images in the CIFAR-10 "python version" layout under
    ``root/cifar-10-batches-py/``: the training images split over the five
    batch files, the test images in ``test_batch``.  Written into a
    temporary folder beside it and renamed into place, so an interrupted
    write leaves no half copy.  ``extra``: {file name: text} added to it."""
    root = Path(root)
    folder = root / FOLDER
    if folder.exists():
        raise FileExistsError(f"{folder} already exists: choose another folder (nothing was changed)")
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".cifar-", dir=root))
    try:
        splits = np.array_split(np.arange(len(train_images)), len(TRAIN_FILES))
        parts = [(name, train_images[idx], train_labels[idx]) for name, idx in zip(TRAIN_FILES, splits)]
        for i, (name, images, labels) in enumerate(parts + [(TEST_FILE, test_images, test_labels)]):
            raw = {b"batch_label": f"{label} batch {i}".encode(),
                   b"labels": [int(v) for v in labels],
                   b"data": np.ascontiguousarray(images, dtype=np.uint8).reshape(len(images), 3072),
                   b"filenames": [f"{label}_{i}_{k:05d}.png".encode() for k in range(len(images))]}
            (tmp / name).write_bytes(pickle.dumps(raw, protocol=4))  # bytes stored as bytes (2 would expand them)
        for name, text in (extra or {}).items():
            (tmp / name).write_text(text)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root


def write_cifar10_subset(root, data, train=5000, test=1000):
    """The first ``train`` training and ``test`` test images of ``data`` (a
    ``load_cifar10`` result) as a small copy in the same layout under
    ``root/cifar-10-batches-py/``, which tqref then loads like the full set
    (``--data-dir root``).  For a class or a laptop: 5,000 + 1,000 images
    are 18 MB instead of 180.  A ``SUBSET.json`` file beside the batches
    says what it is.  Returns ``root``."""
    for name, n, available in (("train", train, len(data["train_images"])),
                               ("test", test, len(data["test_images"]))):
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 0 < n <= available:
            raise ValueError(f"write_cifar10_subset: {name}: expected an integer in [1, {available}], got {n!r}")
    note = json.dumps({"subset_of": str(data.get("root", "")), "train_images": int(train),
                       "test_images": int(test), "which": "the first images of each split"}, indent=2)
    return _write_folder(root, data["train_images"][:train], data["train_labels"][:train],
                         data["test_images"][:test], data["test_labels"][:test], "subset",
                         extra={SUBSET_FILE: note + "\n"})


def write_synthetic_cifar10(root, images_per_batch=64, seed=0):
    """Write a tiny random data set in the CIFAR-10 "python version" layout
    under ``root/cifar-10-batches-py/`` (five training batches and a test
    batch of ``images_per_batch`` images each).  For tests and for trying the
    pipeline without the real data; the pixels are noise.  Returns ``root``."""
    root = Path(root)
    folder = root / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i, name in enumerate(TRAIN_FILES + (TEST_FILE,)):
        raw = {b"batch_label": f"synthetic batch {i}".encode(),
               b"labels": [int(v) for v in rng.integers(0, 10, images_per_batch)],
               b"data": rng.integers(0, 256, (images_per_batch, 3072), dtype=np.uint8),
               b"filenames": [f"synthetic_{i}_{k:05d}.png".encode() for k in range(images_per_batch)]}
        (folder / name).write_bytes(pickle.dumps(raw, protocol=2))
    return root
