# %% [markdown]
# # 5. Residual expansion, Eq. (5)
#
# **Idea.** One ternary tensor can only say "−α, 0 or +α". The residual
# expansion layer (REL) adds more ternary tensors of the *same* latent
# weight, each with a larger threshold, and sums them. With $t_{ex}$
# expansions the effective weight takes up to $2t_{ex}+1$ levels: a finer
# staircase, a smaller approximation error, at $2t_{ex}$ bits per weight.

# %%
import inspect

import matplotlib.pyplot as plt
import numpy as np

from tqref import nn
from tqref.functional import conv2d_forward
from tqref.models import resnet20
from tqref.summary import model_summary
from tqref.ternary import (PAPER_DELTA_LISTS, TernaryConv2d, effective_weight, ternarize_expansions,
                           ternarize_model)

rng = np.random.default_rng(0)

# %% [markdown]
# ## The equation
#
# $$\Delta_k = \delta_k \max|W|,\qquad \alpha_k = \operatorname{mean}\{|W_i| : |W_i| \ge \Delta_k\},\qquad T_k = \mathrm{Tern}_{\Delta_k}(W)$$
#
# $$y = \sum_{k=1}^{t_{ex}} \operatorname{conv}(x, \alpha_k T_k) + b = \operatorname{conv}(x, W_{\text{eff}}) + b,
# \qquad W_{\text{eff}} = \sum_k \alpha_k T_k \tag{5}$$
#
# with $\delta = (0.05, 0.10)$ for $t_{ex}=2$ and $(0.05, 0.10, 0.15, 0.20)$ for
# $t_{ex}=4$. Every expansion ternarizes the same $W$ (not the residual error
# $W - \alpha_1 T_1$), and the bias is added once.

# %%
print(PAPER_DELTA_LISTS)
print(inspect.getsource(ternarize_expansions))
print(inspect.getsource(effective_weight))

# %% [markdown]
# ## The levels of $W_{\text{eff}}$
#
# A 64×64×3×3 weight tensor drawn like a He-initialised ResNet layer, and
# the staircase $W \mapsto W_{\text{eff}}$ for $t_{ex} = 1, 2, 4$.

# %%
w = rng.standard_normal((64, 64, 3, 3)) * np.sqrt(2 / (9 * 64))
order = np.argsort(w.ravel())
fig, axes = plt.subplots(1, 2, figsize=(11, 3.5))
axes[0].hist(w.ravel(), bins=120, color="lightgray")
axes[0].set_title("latent weights W")
w_effs, levels = {}, {}
for t_ex in (1, 2, 4):
    w_effs[t_ex] = effective_weight(ternarize_expansions(w, PAPER_DELTA_LISTS[t_ex]), np.float64)
    levels[t_ex] = np.unique(w_effs[t_ex])
    axes[1].plot(w.ravel()[order], w_effs[t_ex].ravel()[order], label=f"t_ex = {t_ex}: {len(levels[t_ex])} levels")
axes[1].plot(w.ravel()[order], w.ravel()[order], "k:", lw=0.8, label="W")
axes[1].set_xlabel("W")
axes[1].set_ylabel("W_eff")
axes[1].legend()
plt.show()
for t_ex in (1, 2, 4):
    assert len(levels[t_ex]) <= 2 * t_ex + 1
    assert np.allclose(levels[t_ex], -levels[t_ex][::-1])  # symmetric

# %% [markdown]
# Notice the slope: every $\alpha_k$ is a mean of $|W|$ (above its own
# threshold), so the sum of $t_{ex}$ of them is roughly $t_{ex}$ times too
# large. $W_{\text{eff}}$ is a better *shape* of $W$, not a better copy of its
# scale. In a ResNet that does not matter: each convolution feeds a batch
# norm, which divides any common scale away. The fair measure of the
# approximation is therefore the error after the best rescaling $c$,
# $\min_c \|W - c\,W_{\text{eff}}\| / \|W\|$, with $c^* = \langle W, W_{\text{eff}}\rangle / \|W_{\text{eff}}\|^2$:

# %%
errors = {}
for t_ex in (1, 2, 4):
    w_eff = w_effs[t_ex]
    raw = np.linalg.norm(w - w_eff) / np.linalg.norm(w)
    c = np.sum(w * w_eff) / np.sum(w_eff * w_eff)
    errors[t_ex] = np.linalg.norm(w - c * w_eff) / np.linalg.norm(w)
    print(f"t_ex = {t_ex}: {len(levels[t_ex])} levels, best scale c* = {c:.3f}, "
          f"error as is {raw:.3f}, error after rescaling {errors[t_ex]:.3f}")
assert errors[4] < errors[2] < errors[1]

# %% [markdown]
# ## Check: the expansion layer is a plain convolution with $W_{\text{eff}}$
#
# Convolution is linear in its weight, so $t_{ex}$ convolutions with
# $\alpha_k T_k$, summed, equal one convolution with $W_{\text{eff}}$.
# tqref runs the single one.

# %%
conv = nn.Conv2d(3, 8, 3, padding=1, rng=1).astype(np.float64)
conv.params["bias"][...] = rng.standard_normal(8)
layer = TernaryConv2d.from_float(conv, t_ex=4)
x = rng.standard_normal((2, 3, 9, 9))
out = layer.forward(x)
bias = layer.params["bias"][None, :, None, None]
summed = sum(conv2d_forward(x, q.weight(np.float64), None, 1, 1)[0] for q in layer.quantize()) + bias
plain = conv2d_forward(x, layer.effective_weight(), layer.params["bias"], 1, 1)[0]
print("max |layer − Σ_k conv(x, α_k T_k) − b| =", np.abs(out - summed).max())
print("max |layer − conv(x, W_eff) − b|       =", np.abs(out - plain).max())
assert np.allclose(out, summed, atol=1e-12) and np.allclose(out, plain, atol=1e-12)

# %% [markdown]
# ## Compression: 16×, 8×, 4×
#
# Each expansion stores 2 bits per weight plus one fp32 α per layer. The
# model summary counts it for a whole ResNet-20 (batch-norm parameters stay
# fp32, so the whole-model ratio is a little lower than the weights' ratio).

# %%
ratios = {}
for t_ex in (1, 2, 4):
    totals = model_summary(ternarize_model(resnet20(seed=0), t_ex=t_ex)).totals
    ratios[t_ex] = totals
    print(f"t_ex = {t_ex}: {2 * t_ex} bits/weight, quantized weights {totals['quantized_weight_compression_ratio']:.2f}×, "
          f"whole model {totals['compression_ratio']:.2f}× ({totals['ternary_bytes'] / 1e3:.0f} KB vs "
          f"{totals['fp32_bytes'] / 1e3:.0f} KB)")
assert abs(ratios[1]["quantized_weight_compression_ratio"] - 16) < 0.1
assert abs(ratios[2]["quantized_weight_compression_ratio"] - 8) < 0.05
assert abs(ratios[4]["quantized_weight_compression_ratio"] - 4) < 0.05
fig, ax = plt.subplots(figsize=(5, 3))
ax.bar([f"t_ex={t}" for t in (1, 2, 4)], [errors[t] for t in (1, 2, 4)], color="C0", label="relative error")
ax2 = ax.twinx()
ax2.plot([f"t_ex={t}" for t in (1, 2, 4)], [ratios[t]["quantized_weight_compression_ratio"] for t in (1, 2, 4)],
         "C3o-", label="compression")
ax.set_ylabel("min_c ||W − c·W_eff|| / ||W||")
ax2.set_ylabel("compression ×")
plt.show()

# %% [markdown]
# ## Summary
#
# - Eq. (5) sums $t_{ex}$ ternarizations of the same latent weight with
#   nested thresholds; $W_{\text{eff}}$ is a symmetric quantizer with at most $2t_{ex}+1$ levels.
# - One convolution with $W_{\text{eff}}$ computes exactly the sum of the
#   expansion convolutions.
# - Each expansion halves the compression (16×, 8×, 4×) and shrinks the
#   approximation error up to a common scale — the scale itself grows with
#   $t_{ex}$ and is absorbed by the batch norm that follows each convolution.
#
# ## Exercises
#
# 1. Why are the thresholds required to increase? What would $W_{\text{eff}}$
#    look like with $\delta = (0.10, 0.05)$?
# 2. For $t_{ex}=2$, write the value of $W_{\text{eff}}$ on each of the five
#    intervals of $W$ in terms of $\alpha_1, \alpha_2$.
# 3. Compare the rescaled error of $t_{ex}=2$ with a single ternarization
#    whose threshold is chosen to minimise $\|W-\alpha T\|$ (search over δ).
#    Is the expansion worth its extra 2 bits?
#
# (Solutions are checked in `tests/test_notebook_exercises.py`.)
