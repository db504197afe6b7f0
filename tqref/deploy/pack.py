"""The packed ternary format: one ``.npz`` that ``np.load(path, allow_pickle=False)`` opens.

    export_packed(model, "resnet20.tqpk.npz")          # -> bytes written
    packed = load_packed("resnet20.tqpk.npz")          # -> PackedModel (.forward, .metadata, .architecture)

Keys (nine arrays; nothing in the file can run code):

    magic         bytes  b"TQREF-PACKED-TERNARY"
    version       int64  FORMAT_VERSION (1); a reader refuses other versions
    architecture  bytes  ASCII JSON: {"model": "resnet_cifar", "depth", "num_classes", "in_channels",
                         "widths", "packing": "2bit" | "base3", "quantizer": {variant, t_ex,
                         delta_factors, threshold_rule, per_channel, ternary_layers} or null,
                         "layers": [{"name", "kind": "conv" | "linear", "shape", "stride",
                         "padding", "t_ex" (0 = full precision), "per_channel"}, ...]}
    metadata      bytes  ASCII JSON object: whatever the exporter passed (checkpoint, epoch, accuracy ...)
    codes         uint8  the ternary codes of every ternary layer, packed (below), one layer after
                         the other, each layer starting on a byte boundary
    alpha         float32  α_k of every ternary layer: t_ex values (t_ex·F per channel), in layer order
    scale         float32  g = γ/σ of every layer (F each; 1 where no BN follows), in layer order
    shift         float32  c = β − γ·μ/σ of every layer (the linear's bias), in layer order
    dense         float32  the weights of full-precision layers (keep_first / keep_last), C order

The offsets into the concatenated arrays follow from the ``layers`` table
(shape and t_ex), so none are stored.  Concatenating matters for size: an
``.npz`` member costs ~250 bytes of headers, and four members per layer
would add ~20 KB to a ~75 KB ResNet-20.  For the same reason the JSON is
stored as an ASCII byte string (numpy ``S`` dtype, 1 byte per character;
numpy's unicode arrays are UTF-32, 4 bytes per character); it still loads
with ``allow_pickle=False``.

What each layer's arrays mean is ``tqref.deploy.fold``: the folded layer

    y = g ⊙ (Σ_k α_k · conv(x, T_k)) + c

Codes of one layer: the array (t_ex, F, C, HH, WW) (linear: (t_ex, F, D)) of
T ∈ {−1, 0, +1}, flattened in C order (expansion first), then packed:

    "2bit"   4 codes per byte, 2 bits each, first code in the lowest bits:
                 0 -> 0b00,   +1 -> 0b01,   −1 -> 0b10,   0b11 unused (an error when read)
             byte = b0 | b1 << 2 | b2 << 4 | b3 << 6;  the last byte is padded with 0b00
    "base3"  5 codes per byte as base-3 digits d ∈ {0, 1, 2} with the same mapping
             (0 -> 0, +1 -> 1, −1 -> 2), first code the least significant:
                 byte = d0 + 3·d1 + 9·d2 + 27·d3 + 81·d4   (≤ 242; 243..255 are an error)
             1.6 bits per code instead of 2 (3^5 = 243 ≤ 256); padded with d = 0

The reader checks everything and raises ``PackedFormatError`` (a ValueError)
naming the file, the key or layer, what it expected and what it found:
magic, version, missing or unexpected keys, dtypes, array lengths
(truncated arrays), invalid code fields, JSON, and the layer table against
the CIFAR ResNet of the stated depth.
"""

import json
import zipfile
from pathlib import Path

import numpy as np

from tqref.deploy.engine import PackedModel, _layer_entry, check_layers
from tqref.deploy.fold import FoldedLayer
from tqref.io import atomic_write

MAGIC = b"TQREF-PACKED-TERNARY"
FORMAT_VERSION = 1
PACKINGS = ("2bit", "base3")
KEYS = ("magic", "version", "architecture", "metadata", "codes", "alpha", "scale", "shift", "dense")
_CODES_PER_BYTE = {"2bit": 4, "base3": 5}
_FIELD = {0: 0, 1: 1, -1: 2}  # code -> 2-bit field / base-3 digit (documentation; the code uses _to_field)
_FROM_FIELD = np.array([0, 1, -1], dtype=np.int8)  # field/digit -> code
_POWERS3 = np.array([1, 3, 9, 27, 81], dtype=np.uint16)


class PackedFormatError(ValueError):
    """A packed file that is missing, truncated, corrupt, of another version or another architecture."""


# ---------------------------------------------------------------- packing codes
def _check_codes(codes, who):
    codes = np.asarray(codes)
    if codes.ndim != 1 or not np.issubdtype(codes.dtype, np.integer):
        raise ValueError(f"{who}: codes: expected a 1-D integer array, got {codes.dtype} {codes.shape}")
    bad = (codes < -1) | (codes > 1)
    if np.any(bad):
        raise ValueError(f"{who}: codes: expected values in {{-1, 0, 1}}, found "
                         f"{np.unique(codes[bad]).tolist()} at index {int(np.flatnonzero(bad)[0])}")
    return codes


def _to_field(codes):
    return np.where(codes < 0, 2, codes).astype(np.uint8)  # 0 -> 0, +1 -> 1, −1 -> 2


def pack_codes_2bit(codes):
    """codes: (n,) integers in {−1, 0, +1} -> (⌈n/4⌉,) uint8, 4 codes per byte (module docstring)."""
    fields = _to_field(_check_codes(codes, "pack_codes_2bit"))
    fields = np.concatenate([fields, np.zeros(-fields.size % 4, np.uint8)]).reshape(-1, 4)
    return (fields[:, 0] | fields[:, 1] << 2 | fields[:, 2] << 4 | fields[:, 3] << 6).astype(np.uint8)


def pack_codes_2bit_naive(codes):
    """Loop twin of ``pack_codes_2bit``."""
    codes = _check_codes(codes, "pack_codes_2bit_naive")
    out = np.zeros((codes.size + 3) // 4, dtype=np.uint8)
    for i, code in enumerate(codes.tolist()):
        out[i // 4] |= _FIELD[code] << (2 * (i % 4))
    return out


def _check_packed(packed, count, per_byte, who):
    if not isinstance(packed, np.ndarray) or packed.dtype != np.uint8 or packed.ndim != 1:
        raise ValueError(f"{who}: packed: expected a 1-D uint8 array, found "
                         f"{getattr(packed, 'dtype', type(packed).__name__)} {getattr(packed, 'shape', '')}")
    expected = -(-count // per_byte)
    if packed.size != expected:
        raise ValueError(f"{who}: packed: expected {expected} bytes for {count} codes, found {packed.size}")


def unpack_codes_2bit(packed, count, who="unpack_codes_2bit"):
    """(⌈count/4⌉,) uint8 -> (count,) int8 codes.  The unused field 0b11, or a
    non-zero padding field, raises a ValueError naming ``who`` and the code index."""
    _check_packed(packed, count, 4, who)
    fields = ((packed[:, None] >> np.array([0, 2, 4, 6], np.uint8)) & 3).reshape(-1)
    bad = np.flatnonzero(fields == 3)
    if bad.size:
        raise ValueError(f"{who}: code {int(bad[0])}: expected a 2-bit field 00 (0), 01 (+1) or 10 (−1), "
                         f"found 11 ({bad.size} such field(s))")
    if np.any(fields[count:]):
        raise ValueError(f"{who}: padding after code {count}: expected zero bits, found {fields[count:].tolist()}")
    return _FROM_FIELD[fields[:count]]


def unpack_codes_2bit_naive(packed, count, who="unpack_codes_2bit_naive"):
    """Loop twin of ``unpack_codes_2bit``."""
    _check_packed(packed, count, 4, who)
    out = np.zeros(count, dtype=np.int8)
    for i in range(packed.size * 4):
        field = (int(packed[i // 4]) >> (2 * (i % 4))) & 3
        if field == 3:
            raise ValueError(f"{who}: code {i}: expected a 2-bit field 00 (0), 01 (+1) or 10 (−1), found 11")
        if i >= count:
            if field:
                raise ValueError(f"{who}: padding after code {count}: expected zero bits, found {field}")
            continue
        out[i] = _FROM_FIELD[field]
    return out


def pack_codes_base3(codes):
    """codes: (n,) integers in {−1, 0, +1} -> (⌈n/5⌉,) uint8, 5 base-3 digits per byte."""
    digits = _to_field(_check_codes(codes, "pack_codes_base3"))
    digits = np.concatenate([digits, np.zeros(-digits.size % 5, np.uint8)]).reshape(-1, 5)
    return (digits.astype(np.uint16) @ _POWERS3).astype(np.uint8)


def pack_codes_base3_naive(codes):
    """Loop twin of ``pack_codes_base3``."""
    codes = _check_codes(codes, "pack_codes_base3_naive")
    out = np.zeros((codes.size + 4) // 5, dtype=np.uint8)
    for i, code in enumerate(codes.tolist()):
        out[i // 5] += _FIELD[code] * 3 ** (i % 5)
    return out


def unpack_codes_base3(packed, count, who="unpack_codes_base3"):
    """(⌈count/5⌉,) uint8 -> (count,) int8 codes.  A byte above 242, or a
    non-zero padding digit, raises a ValueError naming ``who``."""
    _check_packed(packed, count, 5, who)
    bad = np.flatnonzero(packed > 242)
    if bad.size:
        raise ValueError(f"{who}: byte {int(bad[0])}: expected a value ≤ 242 (5 base-3 digits), "
                         f"found {int(packed[bad[0]])}")
    digits = ((packed[:, None].astype(np.uint16) // _POWERS3) % 3).reshape(-1)
    if np.any(digits[count:]):
        raise ValueError(f"{who}: padding after code {count}: expected zero digits, found {digits[count:].tolist()}")
    return _FROM_FIELD[digits[:count]]


def unpack_codes_base3_naive(packed, count, who="unpack_codes_base3_naive"):
    """Loop twin of ``unpack_codes_base3``."""
    _check_packed(packed, count, 5, who)
    out = np.zeros(count, dtype=np.int8)
    for b, byte in enumerate(packed.tolist()):
        if byte > 242:
            raise ValueError(f"{who}: byte {b}: expected a value ≤ 242 (5 base-3 digits), found {byte}")
        for d in range(5):
            i, digit = 5 * b + d, byte % 3
            byte //= 3
            if i >= count:
                if digit:
                    raise ValueError(f"{who}: padding after code {count}: expected zero digits, found {digit}")
                continue
            out[i] = _FROM_FIELD[digit]
    return out


def pack_codes(codes, packing="2bit"):
    """Dispatch on ``packing`` ("2bit" or "base3")."""
    _check_packing(packing)
    return pack_codes_2bit(codes) if packing == "2bit" else pack_codes_base3(codes)


def unpack_codes(packed, count, packing="2bit", who="unpack_codes"):
    _check_packing(packing)
    return (unpack_codes_2bit if packing == "2bit" else unpack_codes_base3)(packed, count, who)


def packed_size(count, packing):
    """Bytes that ``count`` codes take."""
    return -(-count // _CODES_PER_BYTE[packing])


def _check_packing(packing):
    if packing not in PACKINGS:
        raise ValueError(f"packing: expected one of {PACKINGS}, got {packing!r}")


# ---------------------------------------------------------------- writer
def _json_bytes(value, who):
    try:
        text = json.dumps(value, ensure_ascii=True, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{who}: expected JSON-serialisable values (str, int, float, bool, None, lists, "
                         f"dicts), found: {err}") from None
    return np.array(text.encode("ascii"), dtype=np.bytes_)


def packed_arrays(model, packing="2bit", metadata=None):
    """The file's arrays (dict key -> array) for a tqref CIFAR ResNet or a PackedModel."""
    _check_packing(packing)
    if metadata is not None and not isinstance(metadata, dict):
        raise ValueError(f"export_packed: metadata: expected a dict or None, got {type(metadata).__name__}")
    packed = model if isinstance(model, PackedModel) else PackedModel.from_model(model)
    architecture = dict(packed.architecture)
    architecture["packing"] = packing
    architecture["layers"] = [_layer_entry(layer) for layer in packed.layers]
    codes, alpha, scale, shift, dense = [], [], [], [], []
    for layer in packed.layers:
        if layer.ternary:
            codes.append(pack_codes(layer.codes.reshape(-1), packing))
            alpha.append(np.asarray(layer.alpha, np.float32).reshape(-1))
        else:
            dense.append(np.asarray(layer.dense_weight, np.float32).reshape(-1))
        scale.append(np.asarray(layer.scale, np.float32))
        shift.append(np.asarray(layer.shift, np.float32))

    def cat(parts, dtype):
        return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)

    return {"magic": np.array(MAGIC, dtype=np.bytes_), "version": np.array(FORMAT_VERSION, dtype=np.int64),
            "architecture": _json_bytes(architecture, "export_packed: architecture"),
            "metadata": _json_bytes(metadata or {}, "export_packed: metadata"),
            "codes": cat(codes, np.uint8), "alpha": cat(alpha, np.float32), "scale": cat(scale, np.float32),
            "shift": cat(shift, np.float32), "dense": cat(dense, np.float32)}


def export_packed(model, path, packing="2bit", metadata=None, compress=False):
    """Write ``model`` (a tqref CIFAR ResNet, ternarized or not, or a PackedModel)
    as a packed file at ``path`` (exactly that name; written to a temporary
    file beside it and renamed, so a failure leaves no half file).

    packing:  "2bit" (4 codes per byte) or "base3" (5 per byte)
    metadata: a JSON-serialisable dict stored as is (e.g. checkpoint, epoch, top1)
    compress: np.savez_compressed instead of np.savez (zlib over every array)
    The BN running statistics are folded whatever the model's mode.
    Returns the number of bytes written.
    """
    arrays = packed_arrays(model, packing, metadata)
    save = np.savez_compressed if compress else np.savez
    return atomic_write(path, lambda f: save(f, **arrays)).stat().st_size


# ---------------------------------------------------------------- reader
def _fail(path, message):
    raise PackedFormatError(f"packed file {path}: {message}")


def _read_arrays(path):
    if not path.is_file():
        _fail(path, "file not found")
    try:
        with np.load(path, allow_pickle=False) as z:
            if not hasattr(z, "files"):
                _fail(path, "expected an .npz archive, found a single .npy array")
            return {key: z[key] for key in z.files}
    except PackedFormatError:
        raise
    except (zipfile.BadZipFile, EOFError, ValueError, OSError, KeyError, zipfile.LargeZipFile) as err:
        _fail(path, f"not a readable .npz file (truncated or corrupt?): {type(err).__name__}: {err}")


def _text(path, arrays, key):
    value = arrays[key]
    if value.dtype.kind != "S" or value.ndim != 0:
        _fail(path, f"key {key!r}: expected a 0-d byte string, found {value.dtype} {value.shape}")
    return bytes(value[()])


def _json(path, arrays, key):
    try:
        return json.loads(_text(path, arrays, key).decode("ascii"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        _fail(path, f"key {key!r}: expected ASCII JSON, found invalid text ({err})")


def read_packed(path):
    """Read and check a packed file.  Returns (architecture dict, metadata
    dict, list of FoldedLayer in float32).  Raises PackedFormatError."""
    path = Path(path)
    arrays = _read_arrays(path)
    if "magic" not in arrays or arrays["magic"].dtype.kind != "S" or bytes(arrays["magic"][()]) != MAGIC:
        found = repr(arrays["magic"].tolist()) if "magic" in arrays else "no 'magic' key"
        _fail(path, f"not a tqref packed model: magic: expected {MAGIC!r}, found {found}")
    missing = [key for key in KEYS if key not in arrays]
    unexpected = sorted(set(arrays) - set(KEYS))
    if missing or unexpected:
        _fail(path, f"keys: expected {list(KEYS)}, missing {missing}, unexpected {unexpected}")
    version = arrays["version"]
    if version.ndim != 0 or version.dtype.kind not in "iu" or int(version) != FORMAT_VERSION:
        _fail(path, f"key 'version': expected format version {FORMAT_VERSION}, found {version.tolist()!r} "
                    f"(written by another tqref release?)")
    architecture, metadata = _json(path, arrays, "architecture"), _json(path, arrays, "metadata")
    if not isinstance(architecture, dict):
        _fail(path, f"key 'architecture': expected a JSON object, found {type(architecture).__name__}")
    if not isinstance(metadata, dict):
        _fail(path, f"key 'metadata': expected a JSON object, found {type(metadata).__name__}")
    for key, dtype in (("codes", np.uint8), ("alpha", np.float32), ("scale", np.float32),
                       ("shift", np.float32), ("dense", np.float32)):
        if arrays[key].dtype != dtype or arrays[key].ndim != 1:
            _fail(path, f"key {key!r}: expected a 1-D {np.dtype(dtype).name} array, found "
                        f"{arrays[key].dtype} {arrays[key].shape}")
    for key in ("packing", "layers"):
        if key not in architecture:
            _fail(path, f"architecture: missing key {key!r}")
    packing = architecture["packing"]
    if packing not in PACKINGS:
        _fail(path, f"architecture 'packing': expected one of {PACKINGS}, found {packing!r}")
    entries = architecture["layers"]
    if not isinstance(entries, list):
        _fail(path, f"architecture 'layers': expected a list, found {type(entries).__name__}")
    layers = _split_layers(path, arrays, entries, packing)
    try:
        check_layers(architecture, layers, source=f"packed file {path}")
    except PackedFormatError:
        raise
    except ValueError as err:
        raise PackedFormatError(str(err)) from None
    return architecture, metadata, layers


def _split_layers(path, arrays, entries, packing):
    """Cut the concatenated arrays into FoldedLayers along the layer table."""
    fields = ("name", "kind", "shape", "stride", "padding", "t_ex", "per_channel")
    need = {"codes": 0, "alpha": 0, "scale": 0, "shift": 0, "dense": 0}
    plans = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or any(f not in entry for f in fields):
            found = sorted(entry) if isinstance(entry, dict) else type(entry).__name__
            _fail(path, f"architecture 'layers'[{i}]: expected keys {list(fields)}, found {found}")
        shape = entry["shape"]
        t_ex = entry["t_ex"]
        if not (isinstance(shape, list) and shape and all(isinstance(s, int) and s > 0 for s in shape)) \
                or not isinstance(t_ex, int) or t_ex < 0:
            _fail(path, f"layer {entry['name']!r}: expected a shape of positive ints and t_ex ≥ 0, "
                        f"found shape {shape!r}, t_ex {t_ex!r}")
        size, F_out = int(np.prod(shape)), shape[0]
        counts = {"codes": packed_size(t_ex * size, packing) if t_ex else 0,
                  "alpha": t_ex * (F_out if entry["per_channel"] else 1),
                  "scale": F_out, "shift": F_out, "dense": 0 if t_ex else size}
        plans.append((entry, dict(need), counts))
        for key in need:
            need[key] += counts[key]
    for key, total in need.items():
        if arrays[key].size != total:
            _fail(path, f"key {key!r}: expected {total} values for the layers in 'architecture', "
                        f"found {arrays[key].size} (truncated or from another model?)")
    layers = []
    for entry, start, counts in plans:
        part = {key: arrays[key][start[key]:start[key] + counts[key]] for key in need}
        shape, t_ex, F_out = tuple(entry["shape"]), entry["t_ex"], entry["shape"][0]
        codes = alpha = dense = None
        if t_ex:
            try:
                codes = unpack_codes(part["codes"], t_ex * int(np.prod(shape)), packing,
                                     who=f"packed file {path}: layer {entry['name']!r}: codes")
            except ValueError as err:
                raise PackedFormatError(str(err)) from None
            codes = codes.reshape((t_ex,) + shape)
            alpha = part["alpha"].reshape((t_ex, F_out) if entry["per_channel"] else (t_ex,))
        else:
            dense = part["dense"].reshape(shape)
        layers.append(FoldedLayer(entry["name"], entry["kind"], shape, entry["stride"], entry["padding"],
                                  codes, alpha, dense, part["scale"], part["shift"]))
    return layers


def load_packed(path, form="merged"):
    """Read a packed file into a ``PackedModel`` (float32): ``.forward(x)``,
    ``.metadata``, ``.architecture``.  Raises PackedFormatError (a ValueError)
    naming the file and the problem."""
    architecture, metadata, layers = read_packed(path)
    return PackedModel(architecture, layers, metadata, form, source=f"packed file {path}")


def is_packed_file(path):
    """True when ``path`` is an .npz whose 'magic' is the packed format's
    (cheap: reads that one member); False for anything else, never raises."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return "magic" in z.files and bytes(z["magic"][()]) == MAGIC
    except Exception:  # any unreadable file is simply "not packed"
        return False
