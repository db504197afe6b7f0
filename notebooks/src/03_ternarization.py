# %% [markdown]
# # 3. Ternarization, Eqs. (1)–(3)
#
# **Idea.** Replace every weight of a layer by $-\alpha$, $0$ or $+\alpha$.
# Small weights (below a threshold $\Delta$) become 0; the others keep only
# their sign. One number per layer, $\alpha$, restores the scale. The paper
# picks $\Delta$ as a fixed fraction of the largest weight and $\alpha$ as a
# statistic of the weights: nothing extra is learned.
#
# We look at a real layer of a trained full-precision ResNet-20 (a checkpoint
# made by `python -m tqref train`, see `notebooks/checkpoints/README.md`).

# %%
import inspect

import matplotlib.pyplot as plt
import numpy as np

from tqref.io import load_model
from tqref.ternary import alpha, ternarize, ternary_codes, threshold

CHECKPOINT = "checkpoints/resnet20_fp.npz"
model, ckpt = load_model(CHECKPOINT)
print(f"{ckpt.config['model']}, full precision, epoch {ckpt.epoch}")
W = model.layer3[0].conv2.params["weight"].astype(np.float64)  # latent weight, 64×64×3×3
print("layer3.0.conv2 weight:", W.shape, f"{W.size:,} values")

# %% [markdown]
# ## The equations
#
# $$\Delta = \delta\cdot\max_i |W_i|, \qquad \delta = 0.05 \tag{1}$$
#
# $$\alpha = \frac{1}{|I_\Delta|}\sum_{i\in I_\Delta} |W_i|, \qquad I_\Delta = \{\,i : |W_i| \ge \Delta\,\} \tag{2}$$
#
# $$T_i = \begin{cases} +1 & W_i \ge \Delta\\ -1 & W_i \le -\Delta \\ 0 & \text{otherwise}\end{cases},
# \qquad W' = \alpha\, T \tag{3}$$
#
# The codes $T$ are stored as int8 (2 bits each in a packed file); $\Delta$ and
# $\alpha$ are recomputed from the latent weights at every forward pass.

# %%
print(inspect.getsource(threshold))
print(inspect.getsource(ternary_codes))
print(inspect.getsource(alpha))

# %% [markdown]
# ## The trained layer, its threshold and its codes

# %%
q = ternarize(W)
fig, ax = plt.subplots(figsize=(8, 3.5))
ax.hist(W.ravel(), bins=200, color="gray")
for sign in (-1, 1):
    ax.axvline(sign * q.threshold, color="C3", ls="--")
    ax.axvline(sign * q.alpha, color="C0", ls=":")
ax.set_yscale("log")
ax.set_xlabel("latent weight W")
ax.set_title(f"layer3.0.conv2: ±Δ = ±{q.threshold:.4f} (dashed), ±α = ±{q.alpha:.4f} (dotted), "
             f"{q.sparsity:.1%} zero codes")
plt.show()
values, counts = np.unique(q.codes, return_counts=True)
print("codes:", dict(zip(values.tolist(), counts.tolist())), q.codes.dtype)

# %% [markdown]
# ## Check: the code matches the equations on these numbers

# %%
assert q.threshold == 0.05 * np.abs(W).max()                               # Eq. (1)
above = np.abs(W) >= q.threshold
assert np.isclose(q.alpha, np.abs(W[above]).mean())                        # Eq. (2)
assert np.array_equal(q.codes, np.where(W >= q.threshold, 1, np.where(W <= -q.threshold, -1, 0)))  # Eq. (3)
assert np.array_equal(q.weight(np.float64), q.alpha * q.codes)
print("Eqs. (1)-(3) hold for all", f"{W.size:,}", "weights")

# %% [markdown]
# ## Why α is the mean of |W| above Δ
#
# For fixed codes $T$, choose $\alpha$ to minimise $E(\alpha) = \|W - \alpha T\|^2 = \sum_i (W_i - \alpha T_i)^2$.
# Setting $E'(\alpha) = -2\sum_i T_i (W_i - \alpha T_i) = 0$ gives
# $\alpha = \sum_i T_i W_i / \sum_i T_i^2$. Since $T_i^2 = 1$ exactly on
# $I_\Delta$ and $T_i W_i = |W_i|$ there, this is Eq. (2). $E$ is a parabola in
# $\alpha$, so this is the minimum. A brute-force search agrees:

# %%
grid = np.linspace(0, 2 * q.alpha, 4001)
errors = np.array([np.sum((W - a * q.codes) ** 2) for a in grid])
best = grid[np.argmin(errors)]
print(f"Eq. (2): α = {q.alpha:.6f}; brute force over {len(grid)} values: {best:.6f}")
assert abs(best - q.alpha) <= grid[1] - grid[0]
fig, ax = plt.subplots(figsize=(5, 3))
ax.plot(grid, errors)
ax.axvline(q.alpha, color="C3", ls="--", label="α of Eq. (2)")
ax.set_xlabel("α")
ax.set_ylabel("||W − αT||²")
ax.legend()
plt.show()

# %% [markdown]
# ## How δ trades sparsity against error
#
# A larger $\delta$ zeroes more weights (cheaper: a zero costs no operation)
# but approximates $W$ less well. We sweep $\delta$ for this layer and plot
# the fraction of zero codes and the relative error $\|W - \alpha T\|/\|W\|$.

# %%
deltas = np.linspace(0.01, 0.5, 50)
sweep = [ternarize(W, d) for d in deltas]
sparsity = [s.sparsity for s in sweep]
rel_error = [np.linalg.norm(W - s.weight(np.float64)) / np.linalg.norm(W) for s in sweep]
fig, ax = plt.subplots(figsize=(6, 3.5))
ax.plot(deltas, sparsity, label="sparsity (zero codes)")
ax.plot(deltas, rel_error, label="relative error ||W − αT|| / ||W||")
ax.axvline(0.05, color="gray", ls="--", label="δ = 0.05 (paper)")
ax.set_xlabel("δ")
ax.legend()
plt.show()
best_delta = deltas[int(np.argmin(rel_error))]
print(f"δ = 0.05: sparsity {ternarize(W, 0.05).sparsity:.1%}, error "
      f"{np.linalg.norm(W - ternarize(W, 0.05).weight(np.float64)) / np.linalg.norm(W):.3f}; "
      f"smallest error at δ ≈ {best_delta:.2f}")
assert sparsity == sorted(sparsity)  # more δ, more zeros

# %% [markdown]
# ## Every layer of the network
#
# Δ, α and sparsity per layer of the trained ResNet-20 at δ = 0.05:

# %%
rows = []
for name, layer in model.named_modules():
    if hasattr(layer, "params") and "weight" in layer.params and layer.params["weight"].ndim in (2, 4):
        t = ternarize(layer.params["weight"])
        rows.append((name, t.threshold, t.alpha, t.sparsity))
print(f"{'layer':16s} {'Δ':>8s} {'α':>8s} {'zeros':>6s}")
for name, d, a, s in rows:
    print(f"{name:16s} {d:8.4f} {a:8.4f} {s:6.1%}")

# %% [markdown]
# ## Summary
#
# - Eq. (1) sets one threshold per layer from its largest weight; Eq. (3)
#   keeps the sign of the weights above it; Eq. (2) picks the scale.
# - For the chosen codes, α of Eq. (2) is exactly the least-squares scale.
# - δ trades sparsity (operations skipped) against approximation error;
#   the paper's δ = 0.05 sits at the dense end of the trade.
#
# ## Exercises
#
# 1. For weights drawn from $\mathcal N(0, \sigma^2)$ with $\max|W| \approx 4\sigma$,
#    what fraction of codes is zero at δ = 0.05? Check with a random tensor.
# 2. With TWN's rule $\Delta = 0.7\cdot\operatorname{mean}|W|$ (`threshold_rule="twn"`),
#    what sparsity does this layer get?
# 3. Ternarize per output channel (`per_channel=True`): is the relative error
#    of this layer smaller than with one Δ and α for the whole tensor? Would it
#    *have* to be if the codes stayed those of the per-layer Δ and only α were
#    chosen per channel?
#
# (Solutions are checked in `tests/test_notebook_exercises.py`.)
