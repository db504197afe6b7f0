# %% [markdown]
# # 7. Compression and speed
#
# **Idea.** A ternary model's promise is a smaller file and convolutions
# without multiplications: each output sums the inputs under +1 codes,
# subtracts those under −1, skips the zeros, and multiplies once by a scale.
# This notebook measures both for a ResNet-20: the model summary, the
# sparsity per layer, the size of the packed file on disk, and the time of
# the add-only kernel against tqref's dense path.

# %%
import inspect
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from tqref.deploy import export_packed, load_packed
from tqref.io import load_model
from tqref.kernels import ternary_engine
from tqref.summary import model_summary
from tqref.ternary import ternarize_model

CHECKPOINT = "checkpoints/resnet20_fp.npz"
model = ternarize_model(load_model(CHECKPOINT)[0]).eval()  # trained weights, ternarized (Eqs. 1-3)

# %% [markdown]
# ## The model summary
#
# Per layer: shape, bits per weight, Δ and α, the fraction of zero codes,
# the multiply-accumulates of a dense layer split into additions/subtractions
# and skipped zeros, and the storage in float32 and ternary.

# %%
summary = model_summary(model)
print(summary.to_text())

# %% [markdown]
# ## Sparsity per layer

# %%
names = [layer["name"] for layer in summary.layers]
sparsity = [layer["expansions"][0]["sparsity"] for layer in summary.layers]
fig, ax = plt.subplots(figsize=(10, 3))
ax.bar(range(len(names)), sparsity)
ax.set_xticks(range(len(names)), names, rotation=70, fontsize=7)
ax.set_ylabel("fraction of zero codes")
ax.set_title(f"overall {summary.totals['sparsity']:.1%} of the ternary weights are 0 "
             f"({summary.totals['skipped_fraction']:.1%} of the MACs skipped)")
plt.show()

# %% [markdown]
# ## Bytes on disk
#
# The packed format stores the codes 4 per byte (2 bits), α per layer, and
# the batch norm folded into a per-channel scale and shift (kept apart from
# the codes, so they stay ternary); base-3 packing fits 5 codes in a byte.
# We compare with the float32 state dict saved by `np.savez`.

# %%
folder = Path(tempfile.mkdtemp())
np.savez(folder / "fp32.npz", **model.state_dict())
fp32_bytes = (folder / "fp32.npz").stat().st_size
sizes = {"float32 state dict": fp32_bytes}
for packing in ("2bit", "base3"):
    sizes[f"packed, {packing}"] = export_packed(model, folder / f"packed_{packing}.npz", packing=packing)
for name, size in sizes.items():
    print(f"{name:20s} {size:>10,} bytes   {fp32_bytes / size:5.1f}× smaller")
assert sizes["packed, 2bit"] * 14 <= fp32_bytes

# %% [markdown]
# ## The add-only kernel
#
# For each output channel the engine keeps two lists of input offsets: where
# the code is +1 and where it is −1. The inner loops only add and subtract;
# the one multiplication per output value applies the folded scale.

# %%
print(inspect.getsource(ternary_engine.make_plan))
print(inspect.getsource(ternary_engine._add_taps))

# %% [markdown]
# ## Check: the packed model computes what the ternary model computes

# %%
rng = np.random.default_rng(0)
x = rng.standard_normal((8, 3, 32, 32)).astype(np.float32)
packed = load_packed(folder / "packed_2bit.npz")
difference = np.abs(packed.forward(x) - model.forward(x)).max()
print(f"max |packed − simulated ternary| over 8 images: {difference:.2e}")
assert np.allclose(packed.forward(x), model.forward(x), rtol=1e-4, atol=1e-4)

# %% [markdown]
# ## Timings
#
# Median wall time of a forward pass, batch 1 and batch 64, on this machine
# (two cores; the numbers vary from machine to machine and run to run — the
# benchmark `benchmarks/packed_inference.py` compares with PyTorch too).


# %%
def median_time(fn, x, repeats=7):
    fn(x)  # warm-up: Numba compiles on first use
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


rows = []
for batch in (1, 64):
    xb = rng.standard_normal((batch, 3, 32, 32)).astype(np.float32)
    dense, add_only = median_time(model.forward, xb), median_time(packed.forward, xb)
    rows.append((batch, dense, add_only))
    print(f"batch {batch:3d}: tqref dense {dense * 1e3:7.1f} ms   packed add-only {add_only * 1e3:7.1f} ms   "
          f"ratio {dense / add_only:4.1f}×")
counts = packed.operation_counts((32, 32))["totals"]
print("operations per image:", ", ".join(f"{k} {v:,}" for k, v in counts.items() if isinstance(v, (int, np.integer))))
assert counts["adds"] == summary.totals["adds_merged"] and counts["skipped"] == summary.totals["skipped"]

# %% [markdown]
# ## Summary
#
# - The summary counts what ternarization saves: 2 bits per weight plus one
#   α per layer, and every zero code is a skipped multiply-accumulate.
# - The packed file of a ResNet-20 is about 14× smaller than its float32
#   state dict (batch-norm parameters stay float32).
# - The add-only engine computes the same outputs as the simulated ternary
#   model; whether it is faster than a dense BLAS path depends on the batch
#   size, as the timings show.
#
# ## Exercises
#
# 1. How many bytes would the codes of ResNet-20 take at exactly
#    $\log_2 3 \approx 1.585$ bits per weight? How close does base-3 packing get?
# 2. Export with `t_ex = 2`. By how much does the file grow, and why less than 2×?
# 3. Using the summary, what fraction of the ResNet-20's MACs sit in the
#    first stage (32×32 feature maps)?
#
# (Solutions are checked in `tests/test_notebook_exercises.py`.)
