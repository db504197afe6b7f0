"""Deployment: code packing, BN folding, the packed file, the add-only engine, bad input."""

import json
import os
import zipfile

import numpy as np
import pytest

from tqref import functional as F
from tqref.deploy import PackedFormatError, PackedModel, export_packed, fold_batchnorm, groups, load_packed
from tqref.deploy import pack as P
from tqref.deploy.pack import is_packed_file
from tqref.kernels import ternary_engine
from tqref.kernels.ternary_engine import make_plan, plan_operation_counts, ternary_conv2d, ternary_conv2d_naive
from tqref.models import resnet20
from tqref.summary import model_summary
from tqref.ternary import ternarize_model


def trained_looking(model, seed=0):
    """BN with non-trivial γ, β and running statistics (a few training-mode passes)."""
    rng = np.random.default_rng(seed)
    for name, module in model.named_modules():
        if type(module).__name__ == "BatchNorm2d":
            c = module.num_features
            module.params["weight"][...] = rng.uniform(0.5, 1.5, c) * rng.choice([-1, 1], c, p=[0.2, 0.8])
            module.params["bias"][...] = rng.normal(0, 0.3, c)
    model.linear.params["bias"][...] = rng.normal(0, 0.5, model.num_classes)
    model.train()
    for _ in range(2):
        model.forward(rng.standard_normal((8, 3, 32, 32)).astype(model.dtype))
    return model.eval()


@pytest.fixture(scope="module", params=[1, 2], ids=["t_ex1", "t_ex2"])
def model(request):
    return trained_looking(ternarize_model(resnet20(seed=0), t_ex=request.param))


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(5).standard_normal((3, 3, 32, 32)).astype(np.float32)


def close(a, b, rtol):
    """max |a − b| ≤ rtol · max |b| (logits of untrained nets can be large)."""
    return float(np.abs(a - b).max()) <= rtol * float(np.abs(b).max())


# ---------------------------------------------------------------- code packing
@pytest.mark.parametrize("n", [1, 3, 4, 5, 7, 101])
def test_pack_round_trip_fast_equals_naive(n):
    codes = np.random.default_rng(n).integers(-1, 2, n).astype(np.int8)
    for pack, pack_naive, unpack, unpack_naive in (
            (P.pack_codes_2bit, P.pack_codes_2bit_naive, P.unpack_codes_2bit, P.unpack_codes_2bit_naive),
            (P.pack_codes_base3, P.pack_codes_base3_naive, P.unpack_codes_base3, P.unpack_codes_base3_naive)):
        packed = pack(codes)
        np.testing.assert_array_equal(packed, pack_naive(codes))
        np.testing.assert_array_equal(unpack(packed, n), codes)
        np.testing.assert_array_equal(unpack_naive(packed, n), codes)


def test_pack_documented_mapping_and_density():
    # 0 -> 00, +1 -> 01, −1 -> 10, first code in the lowest bits
    assert P.pack_codes_2bit(np.array([0, 1, -1, 0])).tolist() == [0b00_10_01_00]
    assert P.pack_codes_base3(np.array([1, -1])).tolist() == [1 + 2 * 3]
    assert P.pack_codes_2bit(np.zeros(9, np.int8)).size == 3
    assert P.pack_codes_base3(np.zeros(11, np.int8)).size == 3


@pytest.mark.parametrize("unpack", [P.unpack_codes_2bit, P.unpack_codes_2bit_naive])
def test_unpack_2bit_rejects_field_11_and_dirty_padding(unpack):
    with pytest.raises(ValueError, match="found 11"):
        unpack(np.array([0b11_00_00_00], np.uint8), 4)
    with pytest.raises(ValueError, match="padding"):
        unpack(np.array([0b01_00_00_00], np.uint8), 3)
    with pytest.raises(ValueError, match="expected 2 bytes for 5 codes, found 1"):
        unpack(np.array([0], np.uint8), 5)


@pytest.mark.parametrize("unpack", [P.unpack_codes_base3, P.unpack_codes_base3_naive])
def test_unpack_base3_rejects_bytes_above_242(unpack):
    with pytest.raises(ValueError, match="≤ 242"):
        unpack(np.array([0, 250], np.uint8), 10)
    with pytest.raises(ValueError, match="padding"):
        unpack(np.array([81], np.uint8), 4)


def test_pack_rejects_codes_outside_ternary():
    with pytest.raises(ValueError, match=r"\{-1, 0, 1\}.*\[2\]"):
        P.pack_codes_2bit(np.array([0, 1, 2]))


# ---------------------------------------------------------------- folding
def test_fold_batchnorm_equals_batchnorm_eval():
    rng = np.random.default_rng(0)
    z = rng.standard_normal((2, 4, 3, 3))
    gamma, beta, mean = rng.standard_normal(4), rng.standard_normal(4), rng.standard_normal(4)
    var = rng.uniform(0.1, 2.0, 4)
    y, _ = F.batchnorm_forward(z, gamma, beta, mean, var.copy(), False, eps=1e-5)
    g, c = fold_batchnorm(gamma, beta, mean, var, 1e-5)
    np.testing.assert_allclose(g[:, None, None] * z + c[:, None, None], y, rtol=1e-12, atol=1e-12)


def test_merged_groups_equal_expansions():
    rng = np.random.default_rng(1)
    layer = ternarize_model(resnet20(seed=1), t_ex=2).layer2[0].conv1
    codes = np.stack([e.codes for e in layer.quantize()])
    alpha = np.array([e.alpha for e in layer.quantize()])
    scale = rng.uniform(0.5, 2, codes.shape[1])
    (mc, ms), (ec, es) = groups(codes, alpha, scale, "merged"), groups(codes, alpha, scale, "expansions")
    merged = np.einsum("gf,gf...->f...", ms, mc.astype(float))
    expanded = np.einsum("gf,gf...->f...", es, ec.astype(float))
    np.testing.assert_allclose(merged, expanded, rtol=1e-12)
    w_eff = layer.effective_weight().astype(float) * scale[:, None, None, None]
    np.testing.assert_allclose(merged, w_eff, rtol=1e-6)
    assert np.count_nonzero(mc) == np.count_nonzero(w_eff) < np.count_nonzero(ec)  # merged adds fewer


@pytest.mark.parametrize("t_ex", [1, 2])
def test_folded_equals_unfolded_float64(t_ex):
    model = trained_looking(ternarize_model(resnet20(seed=2, dtype=np.float64), t_ex=t_ex))
    x = np.random.default_rng(3).standard_normal((2, 3, 32, 32))
    ref = model.forward(x)
    packed = PackedModel.from_model(model)
    assert packed.dtype == np.float64
    assert close(packed.forward_naive(x), ref, 1e-10)
    assert close(packed.forward(x), ref, 1e-10)
    assert close(PackedModel.from_model(model, form="expansions").forward(x), ref, 1e-10)


# ---------------------------------------------------------------- the file and the engine
def test_packed_file_round_trip_is_exact(model, tmp_path):
    path = tmp_path / "m.npz"
    meta = {"checkpoint": "runs/x/best.npz", "epoch": 3, "top1": 0.5}
    export_packed(model, path, metadata=meta)
    with np.load(path, allow_pickle=False) as z:
        assert sorted(z.files) == sorted(P.KEYS)
    loaded = load_packed(path)
    assert loaded.metadata == meta
    assert loaded.architecture["depth"] == 20 and loaded.architecture["packing"] == "2bit"
    assert loaded.architecture["quantizer"]["t_ex"] == model.conv1.t_ex
    in_memory = PackedModel.from_model(model)
    for a, b in zip(loaded.layers, in_memory.layers):
        assert a.name == b.name and a.weight_shape == b.weight_shape
        np.testing.assert_array_equal(a.codes, b.codes)
        np.testing.assert_array_equal(a.alpha, b.alpha.astype(np.float32))
        np.testing.assert_array_equal(a.scale, b.scale)
        np.testing.assert_array_equal(a.shift, b.shift)
    # the codes are the model's own, expansion by expansion
    expansions = model.layer3[2].conv2.quantize()
    codes = loaded.layer("layer3.2.conv2").codes
    for k, e in enumerate(expansions):
        np.testing.assert_array_equal(codes[k], e.codes)
        assert loaded.layer("layer3.2.conv2").alpha[k] == np.float32(e.alpha)
    # writing what was read gives the same arrays again
    again = tmp_path / "again.npz"
    export_packed(loaded, again, metadata=meta)
    with np.load(path) as z1, np.load(again) as z2:
        for key in P.KEYS:
            np.testing.assert_array_equal(z1[key], z2[key], err_msg=key)


def test_a_packed_file_is_written_atomically_with_the_usual_mode(model, tmp_path, monkeypatch):
    """Through tqref.io.atomic_write: the mode a plain open() gives (not
    mkstemp's 0600), and a failed export leaves the old file and no temporary one."""
    path = tmp_path / "final.packed.npz"
    size = export_packed(model, path)
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask and size == path.stat().st_size
    before = path.read_bytes()

    def disk_full(f, **arrays):
        f.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", disk_full)
    with pytest.raises(OSError, match="disk full"):
        export_packed(model, path)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == [path.name]


@pytest.mark.parametrize("packing", ["2bit", "base3"])
def test_engine_matches_model_eval(model, images, tmp_path, packing):
    path = tmp_path / f"{packing}.npz"
    export_packed(model, path, packing=packing)
    assert is_packed_file(path)
    packed = load_packed(path)
    ref = model.forward(images)
    assert close(packed.forward(images), ref, 2e-5)
    assert close(packed.forward_naive(images), ref, 2e-5)
    assert close(packed.forward(images[:1]), ref[:1], 2e-5)  # batch 1


def test_engine_with_full_precision_first_and_last_layers(images):
    model = trained_looking(ternarize_model(resnet20(seed=4), keep_first=True, keep_last=True))
    packed = PackedModel.from_model(model)
    assert not packed.layers[0].ternary and not packed.layers[-1].ternary and packed.layers[1].ternary
    ref = model.forward(images)
    assert close(packed.forward(images), ref, 2e-5)
    assert close(packed.forward_naive(images), ref, 2e-5)


def test_full_precision_model_packs_and_runs(images, tmp_path):
    model = trained_looking(resnet20(seed=6))
    export_packed(model, tmp_path / "fp.npz")
    assert close(load_packed(tmp_path / "fp.npz").forward(images), model.forward(images), 2e-5)


def test_packed_file_is_at_most_one_fourteenth_of_float32(tmp_path):
    model = trained_looking(ternarize_model(resnet20(seed=0)))
    np.savez(tmp_path / "fp32.npz", **model.state_dict())
    fp32 = (tmp_path / "fp32.npz").stat().st_size
    two_bit = export_packed(model, tmp_path / "p2.npz")
    base3 = export_packed(model, tmp_path / "p3.npz", packing="base3")
    assert two_bit == (tmp_path / "p2.npz").stat().st_size
    assert two_bit * 14 <= fp32
    assert base3 < two_bit


def test_operation_counts_agree_with_summary():
    model = trained_looking(ternarize_model(resnet20(seed=0), t_ex=2))
    totals = model_summary(model).totals
    merged = PackedModel.from_model(model).operation_counts()["totals"]
    expanded = PackedModel.from_model(model, form="expansions").operation_counts()["totals"]
    assert merged["adds"] == totals["adds_merged"] < expanded["adds"] == totals["adds"]
    assert merged["skipped"] == expanded["skipped"] == totals["skipped"]
    assert merged["dense_macs"] == totals["macs"]
    assert merged["multiplies"] <= totals["multiplies"]


def test_packed_model_is_inference_only(model):
    packed = PackedModel.from_model(model)
    assert packed.training is False and packed.eval() is packed and packed.train(False) is packed
    with pytest.raises(ValueError, match="inference-only"):
        packed.train(True)
    with pytest.raises(TypeError, match="expected dtype float32"):
        packed.forward(np.zeros((1, 3, 32, 32)))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        packed.forward(np.zeros((1, 32, 32, 3), np.float32))


# ---------------------------------------------------------------- kernel vs naive twin, odd shapes
@pytest.mark.parametrize("N, C, Fo, H, W, K, stride, padding", [
    (1, 3, 5, 7, 9, 3, 2, 1), (2, 4, 3, 6, 5, 3, 1, 0), (1, 2, 4, 5, 5, 1, 1, 0),
    (5, 5, 6, 9, 7, 3, 2, 0), (1, 3, 2, 4, 4, 3, 1, 2), (4, 2, 3, 11, 3, 3, 3, 1)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("min_batch", [1, 10**6], ids=["threads", "serial"])
def test_ternary_conv_kernel_equals_naive_and_dense(N, C, Fo, H, W, K, stride, padding, dtype, min_batch,
                                                     monkeypatch):
    """Both kernels: the (n, f) pairs over the threads, and on the calling thread
    (batches below ``PARALLEL_MIN_BATCH``)."""
    monkeypatch.setattr(ternary_engine, "PARALLEL_MIN_BATCH", min_batch)
    rng = np.random.default_rng(N * 100 + C * 10 + H)
    codes = rng.integers(-1, 2, (2, Fo, C, K, K)).astype(np.int8)
    codes[0, 0] = 0  # an all-zero filter in one group
    scales, bias = rng.uniform(0.2, 2, (2, Fo)).astype(dtype), rng.standard_normal(Fo).astype(dtype)
    plan = make_plan(codes, scales, bias)
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    fast, naive = ternary_conv2d(x, plan, stride, padding), ternary_conv2d_naive(x, plan, stride, padding)
    w = np.einsum("gf,gfcpq->fcpq", scales, codes.astype(dtype))
    dense, _ = F.conv2d_forward(x, w, bias, stride, padding)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    assert close(fast, dense, tol) and close(naive, dense, tol)
    # fused shortcut + ReLU: identity needs matching shapes, option A a stride-2 source
    Ho, Wo = dense.shape[2:]
    res = rng.standard_normal((N, Fo, Ho, Wo)).astype(dtype)
    want = np.maximum(dense + res, 0)
    assert close(ternary_conv2d(x, plan, stride, padding, relu=True, residual=res), want, tol)
    assert close(ternary_conv2d_naive(x, plan, stride, padding, relu=True, residual=res), want, tol)
    if Fo >= 2:
        src = rng.standard_normal((N, Fo // 2, 2 * Ho, 2 * Wo - 1)).astype(dtype)
        skip, _ = F.option_a_shortcut_forward(src, Fo)
        offset = (Fo - Fo // 2) // 2
        got = ternary_conv2d(x, plan, stride, padding, False, src, 2, offset)
        assert close(got, dense + skip, tol)
        assert close(ternary_conv2d_naive(x, plan, stride, padding, False, src, 2, offset), dense + skip, tol)


@pytest.mark.parametrize("N, C, H, W, stride, padding", [
    (1, 3, 7, 9, 2, 1), (2, 2, 6, 5, 1, 0), (1, 2, 11, 3, 3, 1), (2, 3, 5, 5, 2, 3), (1, 1, 4, 4, 1, 2),
    (1, 2, 1, 1, 3, 0)])
def test_phase_split_is_the_documented_mapping(N, C, H, W, stride, padding):
    """x_pad[n, c, i·S + p, j·S + q] = xq[n] at ((p % S)·S + q % S, c, i + p // S, j + q // S),
    checked element by element; everything else in xq is zero."""
    from tqref.kernels.ternary_engine import VECTOR, phase_split
    S, P = stride, padding
    x = np.random.default_rng(H * W).standard_normal((N, C, H, W))
    xq, Hq, Wq = phase_split(x, S, P)
    assert (Hq, Wq) == (-(-(H + 2 * P) // S), -(-(W + 2 * P) // S))
    assert xq.shape == (N, S * S * C * Hq * Wq + VECTOR)
    planes = xq[:, :-VECTOR].reshape(N, S, S, C, Hq, Wq)
    x_pad = np.pad(x, ((0, 0), (0, 0), (P, P), (P, P)))
    seen = np.zeros(planes.shape, bool)
    for n, c, r, k in np.ndindex(x_pad.shape):   # padded row r = i·S + p, column k = j·S + q
        assert planes[n, r % S, k % S, c, r // S, k // S] == x_pad[n, c, r, k]
        seen[n, r % S, k % S, c, r // S, k // S] = True
    assert not planes[~seen].any() and not xq[:, -VECTOR:].any()


def test_plan_counts_adds_and_zeros():
    codes = np.zeros((1, 2, 1, 3, 3), np.int8)
    codes[0, 0, 0, 0, :] = [1, -1, 1]
    counts = plan_operation_counts(make_plan(codes, np.ones((1, 2)), np.zeros(2)), (4, 5))
    assert counts == {"adds": 3 * 20, "skipped": (18 - 3) * 20, "multiplies": 1 * 20, "epilogue_adds": 20}


# ---------------------------------------------------------------- bad files
@pytest.fixture(scope="module")
def good_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("packed") / "good.npz"
    export_packed(trained_looking(ternarize_model(resnet20(seed=0))), path)
    with np.load(path, allow_pickle=False) as z:
        arrays = {key: z[key] for key in z.files}
    return path, arrays


def rewrite(tmp_path, arrays, **changes):
    out = dict(arrays)
    for key, value in changes.items():
        if value is None:
            del out[key]
        else:
            out[key] = value
    path = tmp_path / "bad.npz"
    np.savez(path, **out)
    return path


def arch_with(arrays, edit):
    arch = json.loads(bytes(arrays["architecture"][()]).decode())
    edit(arch)
    return np.array(json.dumps(arch).encode(), dtype=np.bytes_)


def test_good_file_loads(good_file):
    assert load_packed(good_file[0]).architecture["model"] == "resnet_cifar"


@pytest.mark.parametrize("changes, message", [
    (dict(magic=np.array(b"NOT-TQREF")), r"magic: expected b'TQREF-PACKED-TERNARY', found b'NOT-TQREF'"),
    (dict(magic=None), "no 'magic' key"),
    (dict(version=np.array(2)), "expected format version 1, found 2"),
    (dict(shift=None), r"missing \['shift'\]"),
    (dict(extra=np.zeros(1)), r"unexpected \['extra'\]"),
    (dict(alpha=np.zeros(3)), "key 'alpha': expected a 1-D float32 array, found float64"),
    (dict(architecture=np.array(b"{not json")), "key 'architecture': expected ASCII JSON"),
])
def test_bad_keys_and_headers(good_file, tmp_path, changes, message):
    path = rewrite(tmp_path, good_file[1], **changes)
    with pytest.raises(PackedFormatError, match=message) as err:
        load_packed(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("key", ["codes", "alpha", "scale", "shift"])
def test_truncated_arrays(good_file, tmp_path, key):
    arrays = good_file[1]
    path = rewrite(tmp_path, arrays, **{key: arrays[key][:-1]})
    with pytest.raises(PackedFormatError, match=f"key '{key}': expected {arrays[key].size} values.*found "
                                                f"{arrays[key].size - 1}"):
        load_packed(path)


def test_truncated_file(good_file, tmp_path):
    data = good_file[0].read_bytes()
    for cut in (len(data) // 2, len(data) - 10):
        path = tmp_path / f"cut{cut}.npz"
        path.write_bytes(data[:cut])
        with pytest.raises(PackedFormatError, match="truncated or corrupt"):
            load_packed(path)
    with pytest.raises(PackedFormatError, match="file not found"):
        load_packed(tmp_path / "missing.npz")
    assert not is_packed_file(tmp_path / "missing.npz")


def test_code_field_11_is_rejected_naming_the_layer(good_file, tmp_path):
    codes = good_file[1]["codes"].copy()
    codes[0] = 0b11_00_00_00  # the 4th code of conv1
    with pytest.raises(PackedFormatError, match=r"layer 'conv1': codes: code 3: .* found 11"):
        load_packed(rewrite(tmp_path, good_file[1], codes=codes))


def test_base3_byte_out_of_range_is_rejected(good_file, tmp_path):
    path = tmp_path / "b3.npz"
    export_packed(load_packed(good_file[0]), path, packing="base3")
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["codes"][-1] = 250  # in the linear layer, the last one
    message = r"layer 'linear': codes: byte \d+: expected a value ≤ 242 .*, found 250"
    with pytest.raises(PackedFormatError, match=message):
        load_packed(rewrite(tmp_path, arrays))


@pytest.mark.parametrize("edit, message", [
    (lambda a: a["layers"][3].update(shape=[16, 16, 5, 5]),
     "key 'codes': expected .* values"),  # the table no longer fits the arrays
    (lambda a: a.update(depth=32), "expected 32 layers for depth 32, found 20"),
    (lambda a: a.pop("layers"), "architecture: missing key 'layers'"),
    (lambda a: a.pop("widths"), "architecture: missing key 'widths'"),
    (lambda a: a["layers"][5].pop("stride"), r"'layers'\[5\]: expected keys"),
    (lambda a: a["layers"][2].update(stride=2), "layer 'layer1.0.conv2': stride: expected 1, found 2"),
    (lambda a: a.update(packing="4bit"), "'packing': expected one of"),
    (lambda a: a["layers"].reverse(), "layer 'conv1': name: expected 'conv1', found 'linear'|"
                                      "key .*: expected .* values"),
])
def test_architecture_mismatch(good_file, tmp_path, edit, message):
    arrays = good_file[1]
    with pytest.raises(PackedFormatError, match=message):
        load_packed(rewrite(tmp_path, arrays, architecture=arch_with(arrays, edit)))


def test_export_rejects_other_models_and_bad_metadata(tmp_path):
    from tqref.models import small_cnn
    with pytest.raises(ValueError, match="expected a tqref CIFAR ResNet.*found SmallConvNet"):
        export_packed(small_cnn(), tmp_path / "s.npz")
    with pytest.raises(ValueError, match="metadata: expected JSON-serialisable"):
        export_packed(resnet20(), tmp_path / "r.npz", metadata={"x": object()})
    with pytest.raises(ValueError, match="packing: expected one of"):
        export_packed(resnet20(), tmp_path / "r.npz", packing="3bit")
    assert not list(tmp_path.glob("*.tmp")) and not (tmp_path / "r.npz").exists()


def test_file_is_a_plain_npz(good_file):
    with zipfile.ZipFile(good_file[0]) as z:  # np.load(allow_pickle=False) already used by load_packed
        assert sorted(name[:-4] for name in z.namelist()) == sorted(P.KEYS)
