# %% [markdown]
# # 7. Compression and speed: a trained ternary ResNet-20 on disk and on an add-only engine
#
# **Learning objectives.** After this notebook you can
# - read a ternary model's summary: bits per weight, Δ and α per layer, the
#   fraction of zero codes, and the multiply-accumulates that become
#   additions or are skipped;
# - account for every byte of the packed file (2-bit codes, α, folded batch
#   norm, headers) and say why it is about 14×, not 16×, smaller than float32;
# - explain how the add-only kernel computes a convolution with additions,
#   subtractions and one multiplication per output value, and check one
#   output by hand;
# - check that a deployed model computes the same function as the model it
#   was exported from, on real test images;
# - read a fair speed benchmark: its command, its load record, and ratios
#   computed from its JSON report.
#
# **Prerequisites.** Notebook 03 (Δ, α and the codes T of Eqs. (1)–(3)),
# 02 (batch norm in evaluation mode, which is folded here; the layer names
# of ResNet-20) and 05 (the effective weight W_eff, Eq. (5)).
# **Reading time:** about 25 minutes (exercises not included).
# **Method:** `docs/method.md`, Eqs. (1)–(3) and (5), and its section
# "Compression and sparsity".
#
# **Idea.** A ternary model's promise is a smaller file and convolutions
# without multiplications: each output sums the inputs under +1 codes,
# subtracts those under −1, skips the zeros, and multiplies once by a scale.
# This notebook checks both promises on a *trained* model: the ternary
# ResNet-20 of `results/resnet20-ternary`, trained from scratch with the
# paper's 200-epoch recipe. Its `last.npz` holds the weights after the last
# epoch; `final.packed.npz` is the deployable file written from it by
# `python -m tqref export … --format packed`.
#
# Nothing is trained here, and nothing is timed here either. A speed
# measurement is only as good as its conditions (an idle machine, each
# framework in its own process, the same threads); the benchmark
# `benchmarks/inference.py` measures under those conditions and writes a
# JSON report, and the last section reads it.

# %%
import hashlib
import inspect
import json
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from tqref.data import load_cifar10, normalize
from tqref.deploy import export_packed, load_packed
from tqref.io import load_model
from tqref.kernels import ternary_engine
from tqref.nn import no_grad
from tqref.summary import model_summary
from tqref.train import evaluate, read_log

RUN = Path("../results/resnet20-ternary")  # the notebook runs in notebooks/
config = json.loads((RUN / "config.json").read_text())
model, checkpoint = load_model(RUN / "last.npz")  # the ternary model, evaluation mode
log = read_log(RUN)
print(f"{RUN.name}: {config['model']}, ternary {config['ternary']}, t_ex {config['t_ex']}, "
      f"{config['epochs']} epochs planned")
print(f"last.npz: epoch {checkpoint.epoch}, logged test top-1 {checkpoint.metrics['top1']:.2%}")
print(f"log.jsonl: {len(log)} epochs, the last one {log[-1]['epoch']} with test top-1 {log[-1]['test_top1']:.2%}")
# the checkpoint is the finished run's last epoch, and the log agrees with it
assert config["ternary"] and config["t_ex"] == 1
assert config["init_from"] is None and config["epochs"] == 200 and config["milestones"] == [80, 120, 160]  # from scratch
assert checkpoint.epoch == config["epochs"] == log[-1]["epoch"]
assert checkpoint.metrics["top1"] == log[-1]["test_top1"]

# %% [markdown]
# ## The model summary
#
# Per layer: shape, bits per weight, Δ and α (Eqs. (1)–(2)), the fraction
# of zero codes, and the storage in float32 and ternary. Counted per image:
# the multiply-accumulates (MACs) of the dense layer, which a ternary layer
# turns into additions or subtractions (codes ±1) and skipped operations
# (codes 0).

# %%
summary = model_summary(model)
print(summary.to_text())

# %% [markdown]
# Every layer is ternary here, the first convolution and the final linear
# layer included (the run keeps neither in full precision). The sparsity
# the summary computes from the weights is the one the training log
# recorded after the last epoch, and it is 43.9 %:

# %%
totals = summary.totals
sparsity = totals["sparsity"]
print(f"ternary layers: {totals['quantized_layers']} of {totals['layers']}")
print(f"sparsity: summary {sparsity:.6f}, log at epoch {log[-1]['epoch']} {log[-1]['sparsity']:.6f} -> {sparsity:.1%}")
assert totals["quantized_layers"] == totals["layers"] == 20
assert not config["keep_first"] and not config["keep_last"]
assert abs(sparsity - log[-1]["sparsity"]) < 1e-12 and f"{sparsity:.1%}" == "43.9%"

# %% [markdown]
# Training made the model sparser. The fraction of zero codes is not fixed
# by δ = 0.05: it depends on how the latent weights sit relative to Δ, and
# training moved them. The log shows that it more than doubled between the
# first epoch and the last:

# %%
first, last = log[0], log[-1]
print(f"sparsity after epoch {first['epoch']}: {first['sparsity']:.1%};  after epoch {last['epoch']}: "
      f"{last['sparsity']:.1%}")
assert last["sparsity"] > 2 * first["sparsity"]

# %% [markdown]
# ## Sparsity per layer
#
# The fraction of MACs skipped is not quite the fraction of zero codes. A
# weight of a convolution is used once per output pixel, so a zero in a
# 32×32 layer of the first stage skips 16 times as many MACs as a zero in
# an 8×8 layer of the last stage. The skipped fraction is the sparsity
# averaged over the layers with their MACs as weights:

# %%
names = [layer["name"] for layer in summary.layers]
layer_sparsity = np.array([layer["sparsity"] for layer in summary.layers])
macs = np.array([layer["macs"] for layer in summary.layers], dtype=np.float64)
weights = np.array([layer["weights"] for layer in summary.layers], dtype=np.float64)
by_weights = float(np.sum(layer_sparsity * weights) / weights.sum())
by_macs = float(np.sum(layer_sparsity * macs) / macs.sum())
print(f"zero codes (mean over weights): {by_weights:.2%};  skipped MACs (mean over MACs): {by_macs:.2%}; "
      f"summary's skipped fraction: {totals['skipped_fraction']:.2%}")
uses = macs / weights  # how often each weight of a layer is used per image: its output pixels
print("uses per weight:", {name: int(u) for name, u in zip(names, uses) if name in ("layer1.0.conv1", "layer3.0.conv2")})
assert uses[names.index("layer1.0.conv1")] == 32 * 32 == 16 * uses[names.index("layer3.0.conv2")]
assert abs(by_weights - sparsity) < 1e-12 and abs(by_macs - totals["skipped_fraction"]) < 1e-12

fig, ax = plt.subplots(figsize=(10, 3.2))
stage_colour = {"conv1": "tab:gray", "layer1": "tab:blue", "layer2": "tab:orange", "layer3": "tab:green",
                "linear": "tab:red"}
labelled = set()
for i, (name, s) in enumerate(zip(names, layer_sparsity)):
    stage = name.split(".")[0]
    ax.bar(i, s, color=stage_colour[stage], label=None if stage in labelled else stage)  # one legend entry per stage
    labelled.add(stage)
ax.axhline(sparsity, color="black", linestyle="--", linewidth=1, label=f"whole model {sparsity:.1%}")
ax.set_xticks(range(len(names)), names, rotation=70, fontsize=7)
ax.set_ylabel("fraction of zero codes")
ax.set_title(f"{RUN.name}, epoch {checkpoint.epoch}: {sparsity:.1%} of the codes are 0, "
             f"{totals['skipped_fraction']:.1%} of the MACs skipped")
ax.legend(fontsize=7, ncol=3, loc="upper left")
plt.show()

# %% [markdown]
# ## Bytes on disk
#
# The packed file keeps what inference needs and nothing else. Each batch
# norm is folded into a per-channel scale g = γ/σ and shift c = β − γμ/σ
# (`tqref/deploy/fold.py`), which are stored *apart* from the codes: folding
# them into the weights would make the weights non-ternary. The codes are
# packed 4 to a byte (2 bits each; the fourth 2-bit pattern is unused), each
# layer starting on a new byte. Below, every array of the committed file,
# then what the rest of the file is.

# %%
packed_path = RUN / "final.packed.npz"
file_bytes = packed_path.stat().st_size
with np.load(packed_path, allow_pickle=False) as z:
    arrays = {key: z[key] for key in z.files}
architecture = json.loads(bytes(arrays["architecture"][()]).decode("ascii"))
metadata = json.loads(bytes(arrays["metadata"][()]).decode("ascii"))
print(f"{packed_path.name}: {file_bytes:,} bytes; packing {architecture['packing']}; exported from "
      f"{metadata['checkpoint']}, epoch {metadata['epoch']}")
for key, value in arrays.items():
    print(f"  {key:13s} {str(value.dtype):8s} {value.size:>7,} values {value.nbytes:>7,} bytes")
array_bytes = sum(value.nbytes for value in arrays.values())
code_counts = [layer["weights"] for layer in summary.layers]
channels = sum(layer["weight_shape"][0] for layer in summary.layers)
floats = arrays["alpha"].nbytes + arrays["scale"].nbytes + arrays["shift"].nbytes
text = arrays["architecture"].nbytes + arrays["metadata"].nbytes
container = file_bytes - array_bytes
print(f"codes {arrays['codes'].nbytes:,} bytes; float32 α, g, c {floats:,}; JSON (architecture, metadata) {text:,}; "
      f"the .npz container (a zip entry and a .npy header per array) {container:,}")
# codes: 4 per byte, rounded up per layer; α: one float32 per layer; g and c: one float32 each per channel
assert arrays["codes"].nbytes == sum(-(-n // 4) for n in code_counts)
fields = (arrays["codes"][:, None] >> np.array([0, 2, 4, 6], dtype=np.uint8)) & 3  # the four 2-bit fields of each byte
assert not np.any(fields == 3)  # the pattern 11 never occurs
assert arrays["alpha"].nbytes == 4 * len(code_counts) and arrays["dense"].size == 0
assert arrays["scale"].nbytes == arrays["shift"].nbytes == 4 * channels
assert sum(code_counts) == totals["quantized_weights"]
assert metadata["checkpoint"] == "last.npz" and metadata["epoch"] == checkpoint.epoch
assert 1000 <= text + container < 10_000  # "a few kilobytes"

# %% [markdown]
# The committed file is the export of `last.npz` (its metadata says so;
# exporting again gives the same arrays). We compare it with the float32
# state dict saved by `np.savez` (the float model a dense deployment ships)
# and with the base-3 packing (5 codes per byte, since 3⁵ = 243 ≤ 256:
# 1.6 bits per code).

# %%
folder = Path(tempfile.mkdtemp())
np.savez(folder / "fp32.npz", **model.state_dict())
fp32_bytes = (folder / "fp32.npz").stat().st_size
base3_bytes = export_packed(model, folder / "base3.npz", packing="base3")
export_packed(model, folder / "again.npz")
with np.load(folder / "again.npz", allow_pickle=False) as z:
    same = all(np.array_equal(z[key], arrays[key]) for key in ("codes", "alpha", "scale", "shift", "dense"))
sizes = {"float32 state dict (np.savez)": fp32_bytes, "final.packed.npz (2 bits)": file_bytes,
         "packed, base 3": base3_bytes}
for name, size in sizes.items():
    ratio = "" if size == fp32_bytes else f"{fp32_bytes / size:5.2f}× smaller than float32"
    print(f"{name:30s} {size:>10,} bytes   {ratio}")
print(f"codes: {arrays['codes'].nbytes:,} of the packed file's {file_bytes:,} bytes "
      f"({arrays['codes'].nbytes / file_bytes:.1%}); the summary's whole-model ratio, without file headers: "
      f"{totals['compression_ratio']:.2f}×")
print(f"export of last.npz gives the committed arrays again: {same}")
assert same
assert 14 <= fp32_bytes / file_bytes < 15 < 16 <= fp32_bytes / base3_bytes < 18
assert 3 ** 5 <= 256 < 3 ** 6

# %% [markdown]
# So the packed file is about 14× smaller than float32, not the 16× of the
# codes alone: the per-channel scale and shift stay float32, and the file
# carries a few kilobytes of JSON and container headers (printed above).
# Those headers are a fixed cost, so their share shrinks as models grow.

# %% [markdown]
# ## The add-only kernel
#
# With batch norm folded, a ternary convolution and its batch norm compute,
# per output channel f (`tqref/deploy/fold.py`):
#
# $$y_f = s_f \cdot \sum_{i:\,T_{f,i}=+1} x_i \;-\; s_f \cdot \sum_{i:\,T_{f,i}=-1} x_i \;+\; c_f,
# \qquad s_f = \alpha\,\gamma_f/\sigma_f .$$
#
# The engine prepares, for each output channel, two lists of input offsets:
# where the code is +1 and where it is −1 (`make_plan`). The inner loop
# (`_add_taps`, compiled by Numba) only adds or subtracts contiguous runs
# of the input, four code positions at a time; zeros are never visited.
# One multiplication per output value applies s_f.

# %%
print(inspect.getsource(ternary_engine.make_plan))
print(inspect.getsource(ternary_engine._add_taps.py_func))  # the Python source Numba compiles

# %% [markdown]
# One output by hand: channel 5 of the first convolution at pixel (10, 20)
# of the first test image, from additions and subtractions only, then one
# multiplication and one addition. The simulated ternary model (a float
# convolution with W_eff = α·T, then batch norm) must give the same number.

# %%
data = load_cifar10(verbose=False)
images, labels = data["test_images"], data["test_labels"]
x = normalize(images[:1])
packed = load_packed(packed_path)
layer = packed.layer("conv1")
f, i, j = 5, 10, 20
patch = np.pad(x[0], ((0, 0), (1, 1), (1, 1)))[:, i:i + 3, j:j + 3]  # padding 1: a 3×3 window around (i, j)
T = layer.codes[0, f]  # (3, 3, 3) codes in {−1, 0, +1}
sums = patch[T == 1].sum() - patch[T == -1].sum()  # additions and subtractions only
by_hand = (layer.alpha[0] * layer.scale[f]) * sums + layer.shift[f]
with no_grad():
    simulated = model.bn1.forward(model.conv1.forward(x))[0, f, i, j]
print(f"{int((T == 1).sum())} additions, {int((T == -1).sum())} subtractions, {int((T == 0).sum())} zeros skipped, "
      f"1 multiplication: {by_hand:.6f};  simulated conv + batch norm: {simulated:.6f}")
assert np.isclose(by_hand, simulated, rtol=1e-5, atol=1e-5)

# %% [markdown]
# Counted over the whole network, per image: the engine's additions and
# skipped zeros are the summary's. Its multiplications are one per output
# value, except in output channels whose codes are *all* zero: such a
# channel's output is the constant c_f, and the kernel skips it. Training
# left a few of those (the cell counts them from the codes); the summary,
# which counts one multiplication per output value, does not look for them.

# %%
counts = packed.operation_counts((32, 32))["totals"]
outputs = sum(int(np.prod(layer["output_shape"][1:])) for layer in summary.layers)
pixels = {layer["name"]: int(np.prod(layer["output_shape"][2:])) for layer in summary.layers}
dead = {ly.name: int(np.all(ly.codes[0].reshape(ly.codes.shape[1], -1) == 0, axis=1).sum())
        for ly in packed.layers}
dead = {name: k for name, k in dead.items() if k}
print(f"output channels with all codes zero: {dead}")
print(f"dense MACs {counts['dense_macs']:,}; engine: {counts['adds']:,} additions/subtractions, "
      f"{counts['skipped']:,} zeros skipped ({counts['skipped_fraction']:.1%}), {counts['multiplies']:,} "
      f"multiplications, {counts['other_adds']:,} other additions (shifts, residuals, pooling)")
assert counts["adds"] == totals["adds_merged"] and counts["skipped"] == totals["skipped"]
assert counts["adds"] + counts["skipped"] == counts["dense_macs"] == totals["macs"]
assert totals["multiplies"] == outputs
assert counts["multiplies"] == outputs - sum(k * pixels[name] for name, k in dead.items())

# %% [markdown]
# Fewer operations need not mean less time: the time also depends on how
# the loops move data through the caches and how well they use the CPU's
# vector units, for the engine and for the dense path alike. Only a
# measurement can say which path is faster; that is the last section.
#
# ## Check: the packed engine computes the simulated ternary model
#
# On the first 1,000 test images: the logits of the packed engine (folded
# batch norm, add-only kernels) and of the simulated ternary model (float
# convolutions with W_eff, batch norm) must agree to float32 rounding, and
# so must their predictions. The accuracy of 1,000 images is an estimate of
# the accuracy of all 10,000, with a standard error of about
# √(p(1−p)/1000) ≈ 1 point; it must lie within three standard errors of
# the accuracy the training log recorded at the last epoch.

# %%
n = 1000
x = normalize(images[:n])
packed_logits = np.concatenate([packed.forward(x[k:k + 250]) for k in range(0, n, 250)])
with no_grad():
    simulated_logits = np.concatenate([model.forward(x[k:k + 250]) for k in range(0, n, 250)])
difference = float(np.abs(packed_logits - simulated_logits).max())
scale = float(np.abs(simulated_logits).max())
disagree = int((packed_logits.argmax(1) != simulated_logits.argmax(1)).sum())
accuracy = float((packed_logits.argmax(1) == labels[:n]).mean())
logged = log[-1]["test_top1"]
standard_error = float(np.sqrt(logged * (1 - logged) / n))
print(f"max |packed − simulated| over {n} images: {difference:.2e} (largest logit {scale:.1f}); "
      f"predictions that differ: {disagree}")
print(f"top-1 on the first {n} test images: {accuracy:.1%};  logged for all 10,000 at epoch {log[-1]['epoch']}: "
      f"{logged:.2%} (standard error of a 1,000-image estimate: {standard_error:.1%})")
assert np.allclose(packed_logits, simulated_logits, rtol=1e-4, atol=1e-4 * scale)
assert disagree == 0
assert abs(standard_error - 0.01) < 0.002 and abs(accuracy - logged) <= 3 * standard_error

# %% [markdown]
# And on the whole test set, the packed file alone (`tqref.train.evaluate`
# accepts it like a model): it reproduces the logged accuracy, to within a
# handful of the 10,000 images (the cell prints the difference).

# %%
result = evaluate(packed, images, labels)
difference_images = round(abs(result["top1"] - logged) * len(labels))
print(f"packed engine, all {len(labels):,} test images: top-1 {result['top1']:.2%} "
      f"(logged {logged:.2%}; {difference_images} images apart)")
assert difference_images <= 5

# %% [markdown]
# ## Speed: a fair benchmark, read from its report
#
# Timing the engine in this notebook would measure this notebook's
# machine at this moment, and timing two frameworks in one process can let
# their thread pools and OpenMP runtimes interfere. `benchmarks/inference.py`
# (on `benchmarks/harness.py`) measures instead:
#
# - four contenders computing the same function, from the same trained
#   files: the packed engine; tqref dense (the ternary model simulated in
#   float: a float ResNet-20 holding W_eff, tqref's fast path); PyTorch in
#   its default NCHW layout and in channels-last, loading the weights
#   `python -m tqref export … --format torch` writes (PyTorch is optional
#   and skipped if not installed);
# - every contender in a fresh process of its own, once per round, the
#   order rotating from round to round; 2 threads each; public APIs only;
# - batch 1 and batch 256; per contender the fastest call of all rounds
#   ("best", the headline) and the median of the rounds' medians; PyTorch's
#   faster layout as the headline, NCHW beside it;
# - the machine's load before and after every run, and how many cores
#   other processes kept busy meanwhile;
# - the logits of every contender checked against tqref dense.
#
# The cell below reads the report if it exists, checks that it measured
# this model (the SHA-256 of `final.packed.npz`) and that its ratios follow
# from its times, and prints its table.

# %%
BENCH = Path("../benchmarks/results/inference.json")
bench = json.loads(BENCH.read_text()) if BENCH.is_file() else None
if bench is None:
    print(f"No benchmark report yet ({BENCH.name}). To make one, from the repository root, on an idle machine:\n"
          "    pip install torch==2.13.0        # optional: adds the two PyTorch contenders\n"
          "    python benchmarks/inference.py   # writes benchmarks/results/inference.json\n"
          "then run this notebook again.")
else:
    model_info = bench["meta"]["model"]
    print(f"command:  {bench['command']}")
    print(f"measured: {bench['started']} – {bench['finished']}, code {bench['meta']['git_commit'][:10]}"
          f"{' (with uncommitted changes)' if bench['meta']['git_dirty'] else ''}, "
          f"{bench['machine']['cpu_model']}, {bench['machine']['usable_cpus']} CPUs, "
          f"{bench['meta']['threads']} threads per contender, {bench['rounds']} rounds")
    for name, why in bench["skipped"].items():
        print(f"skipped:  {name}: {why}")
    assert bench["complete"] and bench["agree"]
    assert model_info["packed_sha256"] == hashlib.sha256(packed_path.read_bytes()).hexdigest()
    print(f"\n{'batch':>5}  {'contender':22} {'best ms':>9} {'median ms':>10} {'best img/s':>11} "
          f"{'logits vs dense':>16}")
    for group, by_name in bench["summary"].items():
        for name, s in by_name.items():
            print(f"{s['items_per_call']:>5}  {name:22} {1e3 * s['best_s']:9.2f} {1e3 * s['median_s']:10.2f} "
                  f"{s['best_items_per_s']:11.0f} {bench['agreement'][group][name]:16.1e}")
    load = bench["load"]
    print(f"\nload: 1-minute load average {load['loadavg_1min_min']:.2f} to {load['loadavg_1min_max']:.2f}; "
          f"other processes kept {load['other_cores_busy_median']:.2f} cores busy (median over the runs; "
          f"max {load['other_cores_busy_max']:.2f})")

# %% [markdown]
# The ratios, computed from the times above (a ratio r > 1 means the first
# contender is r times as fast as the second), by the best call and by the
# median, and a verdict on the load: a report counts as measured on an
# idle machine only if no other process kept more than a quarter of a core
# busy during any run.

# %%
if bench is not None:
    def faster(a, b, key):
        return bench["summary"][group][b][key] / bench["summary"][group][a][key]

    for group, row in bench["ratios_best"].items():
        pairs = [("tqref-packed", "tqref-dense")]
        if "pytorch_best_layout" in row:
            pairs += [("tqref-packed", row["pytorch_best_layout"]), ("tqref-dense", row["pytorch_best_layout"])]
            if row["pytorch_best_layout"] != "pytorch-nchw":
                pairs += [("tqref-packed", "pytorch-nchw")]
        for a, b in pairs:
            best, median = faster(a, b, "best_s"), faster(a, b, "median_s")
            key = f"{a}_vs_pytorch-best-layout" if b == row.get("pytorch_best_layout") else f"{a}_vs_{b}"
            assert abs(row[key] - best) < 1e-9 * best  # the report's ratio follows from its times
            assert abs(bench["ratios_median"][group][key] - median) < 1e-9 * median
            verdict = ("faster by both" if best > 1 and median > 1 else "slower by both" if best < 1 and median < 1
                       else "best and median disagree")
            print(f"{group}: {a} against {b}: {best:.2f}× by the best call, {median:.2f}× by the median ({verdict})")
    idle = load["other_cores_busy_max"] <= load["busy_threshold"]
    assert idle == load["idle"]
    print("\nverdict: " + ("measured on an idle machine" if idle else
                           f"measured on a BUSY machine (other processes used up to {load['other_cores_busy_max']:.2f} "
                           f"cores): treat these ratios as preliminary and measure again on an idle machine"))

# %% [markdown]
# ## Summary
#
# - The trained ternary ResNet-20 has 43.9 % zero codes, more than twice
#   the sparsity after its first epoch; because a weight is used once per
#   output pixel, the share of skipped MACs is a MAC-weighted mean of the
#   per-layer sparsities.
# - Its packed file holds 2-bit codes, one α per layer, and the batch norm
#   folded into a float32 scale and shift per channel; it is about 14×
#   smaller than the float32 state dict, not 16×, because of those floats
#   and the file's headers.
# - The add-only engine computes each output with additions and
#   subtractions of the inputs under ±1 codes and one multiplication; on
#   real test images it computes the function of the simulated ternary
#   model and reproduces the run's logged accuracy.
# - Speed is measured outside the notebook, each framework in its own
#   process with the machine's load recorded; the notebook reads the
#   report, checks it belongs to this model, and computes the ratios from
#   it.
#
# ## Exercises
#
# 1. How many bytes would the codes of ResNet-20 take at exactly
#    $\log_2 3 \approx 1.585$ bits per weight? How close does base-3 packing get?
# 2. Export a model with `t_ex = 2` (or look at `results/resnet20-tex2/final.packed.npz`).
#    By how much does the file grow, and why less than 2×?
# 3. Using the summary, what fraction of the ResNet-20's MACs sit in the
#    first stage (32×32 feature maps)?
# 4. (Coding.) From `summary.layers`, find the layer whose zero codes skip
#    the most MACs per image, and the share of all skipped MACs that the
#    last stage (`layer3`, 8×8 feature maps) contributes although it holds
#    most of the weights.
# 5. (Question.) The benchmark reports the fastest call and the median of
#    the rounds' medians. Which of the two does a neighbour process that
#    takes a core now and then change more, and why does the report record
#    the load next to every run rather than once?
#
# (Solutions to exercises 1–4 are checked in `tests/test_notebook_exercises.py`.)
