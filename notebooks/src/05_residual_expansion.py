# %% [markdown]
# # 5. Residual expansion, Eq. (5)
#
# **Learning objectives.** After this notebook you can
# - write Eq. (5) and compute $W_{\text{eff}} = \sum_k \alpha_k T_k$ for
#   $t_{ex} = 1, 2, 4$ with tqref;
# - count the levels of $W_{\text{eff}}$ (at most $2t_{ex}+1$) and explain why
#   its scale is too large and why a batch norm after the convolution makes
#   that harmless;
# - measure the approximation error up to a common scale, and check that an
#   expansion layer is one convolution with $W_{\text{eff}}$;
# - state the storage cost: $2t_{ex}$ bits per weight, i.e. 16×, 8×, 4× compression.
#
# **Prerequisites.** Notebook 01 (the convolution, `conv2d_forward`), 02 (batch
# norm: it removes a common scale) and 03 (Eqs. (1)–(3), `ternarize`, α, Δ,
# sparsity).
# **Reading time:** about 15 minutes (exercises not included).
# **Method:** `docs/method.md`, Eq. (5).
#
# **Idea.** One ternary tensor can only say "−α, 0 or +α". The residual
# expansion layer (REL) adds more ternary tensors of the *same* latent
# weight, each with a larger threshold, and sums them. With $t_{ex}$
# expansions the effective weight takes up to $2t_{ex}+1$ levels: a finer
# staircase that follows the shape of $W$ more closely, at $2t_{ex}$ bits per weight.

# %%
import inspect

import matplotlib.pyplot as plt
import numpy as np

import tqref
from tqref import nn
from tqref.functional import batchnorm_forward, conv2d_forward
from tqref.kernels import ops as K
from tqref.models import resnet20
from tqref.summary import model_summary
from tqref.ternary import (PAPER_DELTA_LISTS, TernaryConv2d, effective_weight, quantized_layers,
                           ternarize_expansions, ternarize_model)

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
#
# Read `tqref.ternary.quantize.ternarize_expansions`: it is Eqs. (1)–(3) of
# notebook 03 called once per threshold. A ternary layer asks its backend
# (`tqref.backend`, notebook 01) for `ternarize_expansions` at every forward
# pass: on the reference backend it gets this readable function; on the fast
# backend, the default, it gets `tqref.kernels.ops.ternarize_expansions`,
# which returns the same list from one Numba kernel that makes two passes
# over W for all expansions together (`tqref.kernels.quantize`). The check
# below reads both backends' tables; the next section checks that the two
# functions agree.

# %%
print(inspect.getsource(TernaryConv2d.quantize))  # what a layer calls
assert "current_backend().ternarize_expansions(" in inspect.getsource(TernaryConv2d.quantize)
assert tqref.get_backend("reference").ternarize_expansions is ternarize_expansions
assert tqref.get_backend("fast").ternarize_expansions is K.ternarize_expansions
assert tqref.backend.DEFAULT == "fast"
print(PAPER_DELTA_LISTS)
print(inspect.getsource(ternarize_expansions))
print(inspect.getsource(effective_weight))

# %% [markdown]
# ## The levels of $W_{\text{eff}}$
#
# A 64×64×3×3 weight tensor drawn like a He-initialised ResNet layer, and
# the staircase $W \mapsto W_{\text{eff}}$ for $t_{ex} = 1, 2, 4$. First the
# check: for each $t_{ex}$ the fast kernel gives the readable function's codes
# and thresholds exactly and its α to 1e-12 relative, and $\Delta_k$ is
# $\delta_k \max|W|$ of the same $W$.

# %%
w = rng.standard_normal((64, 64, 3, 3)) * np.sqrt(2 / (9 * 64))
for t_ex in (1, 2, 4):  # the fast backend's kernel gives what the readable function gives
    fast_list = K.ternarize_expansions(w, PAPER_DELTA_LISTS[t_ex])
    readable_list = ternarize_expansions(w, PAPER_DELTA_LISTS[t_ex])
    assert len(fast_list) == len(readable_list) == t_ex
    for fast, readable, d in zip(fast_list, readable_list, PAPER_DELTA_LISTS[t_ex]):
        assert np.array_equal(fast.codes, readable.codes) and fast.threshold == readable.threshold
        assert np.isclose(fast.alpha, readable.alpha, rtol=1e-12, atol=0)
        assert readable.threshold == d * np.abs(w).max()  # Δ_k from the same W
print("tqref.kernels.ops.ternarize_expansions == tqref.ternary.quantize.ternarize_expansions for t_ex = 1, 2, 4")
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
# threshold), and a weight above $k$ thresholds gets the sum of $k$ of them.
# For $t_{ex} \ge 2$ the staircase is therefore steeper than the line
# $W_{\text{eff}} = W$: $|W_{\text{eff}}| > |W|$ for most weights (the
# fraction is printed below). $W_{\text{eff}}$ is a better *shape* of $W$, not
# a better copy of its scale. The fair measure of the approximation is
# therefore the error after the best rescaling $c$,
# $\min_c \|W - c\,W_{\text{eff}}\| / \|W\|$, with
# $c^* = \langle W, W_{\text{eff}}\rangle / \|W_{\text{eff}}\|^2$. The factor
# $1/c^*$ by which $W_{\text{eff}}$ is too large grows with $t_{ex}$ but stays
# below $t_{ex}$ (printed and checked below):

# %%
errors, raw_errors, scales = {}, {}, {}
for t_ex in (1, 2, 4):
    w_eff = w_effs[t_ex]
    raw_errors[t_ex] = np.linalg.norm(w - w_eff) / np.linalg.norm(w)
    scales[t_ex] = c = np.sum(w * w_eff) / np.sum(w_eff * w_eff)
    errors[t_ex] = np.linalg.norm(w - c * w_eff) / np.linalg.norm(w)
    larger = np.mean(np.abs(w_eff) > np.abs(w))
    print(f"t_ex = {t_ex}: {len(levels[t_ex])} levels, |W_eff| > |W| for {larger:.0%} of the weights, "
          f"best scale c* = {c:.3f} (1/c* = {1 / c:.2f}), "
          f"error as is {raw_errors[t_ex]:.3f}, after rescaling {errors[t_ex]:.3f}")
    assert t_ex == 1 or larger > 0.5
assert errors[4] < errors[2] < errors[1]              # the shape improves ...
assert raw_errors[4] > raw_errors[2] > raw_errors[1]  # ... the unscaled copy gets worse
assert 1 / scales[1] < 1 / scales[2] < 1 / scales[4] and all(1 / scales[t] <= t for t in (2, 4))

# %% [markdown]
# In a ResNet the scale of a convolution's weight does not matter when a
# batch norm follows it: in training mode batch norm divides the channel by
# its batch standard deviation, so $\operatorname{conv}(x, c\,W_{\text{eff}})$ and
# $\operatorname{conv}(x, W_{\text{eff}})$ give the same output up to the small
# $\varepsilon$; the running mean and variance it keeps for evaluation scale
# by $c$ and $c^2$, so evaluation mode removes the scale too. Every
# convolution of ResNet-20 feeds a batch norm (checked below on the names of
# the ternarized layers). The final linear layer, also ternarized, does not:
# there the scale multiplies the logits.

# %%
x = rng.standard_normal((8, 64, 6, 6))
ones, zeros = np.ones(64), np.zeros(64)
for t_ex in (2, 4):
    y = conv2d_forward(x, w_effs[t_ex], None, 1, 1)[0]
    c = scales[t_ex]
    # running (mean, var), the rescaled layer's started at (0, c²) as if every earlier batch was rescaled too
    stats, stats_c = (zeros.copy(), ones.copy()), (zeros.copy(), ones.copy() * c**2)
    plain = batchnorm_forward(y, ones, zeros, *stats, True)[0]  # training mode: updates stats in place
    rescaled = batchnorm_forward(c * y, ones, zeros, *stats_c, True)[0]
    assert np.allclose(stats_c[0], c * stats[0]) and np.allclose(stats_c[1], c**2 * stats[1])
    plain_eval = batchnorm_forward(y, ones, zeros, *stats, False)[0]
    rescaled_eval = batchnorm_forward(c * y, ones, zeros, *stats_c, False)[0]
    print(f"t_ex = {t_ex}: max |BN(conv(x, c*·W_eff)) − BN(conv(x, W_eff))| = "
          f"{np.abs(plain - rescaled).max():.1e} (training mode), "
          f"{np.abs(plain_eval - rescaled_eval).max():.1e} (evaluation mode)")
    # the differences come from ε = 1e-5, added to c²σ² instead of σ²
    assert np.allclose(plain, rescaled, rtol=1e-3, atol=1e-4)
    assert np.allclose(plain_eval, rescaled_eval, rtol=1e-3, atol=1e-4)
names = [name for name, _ in ternarize_model(resnet20(seed=0)).named_modules()]
quantized = [name for name, _ in quantized_layers(ternarize_model(resnet20(seed=0)))]
followed = [q for q in quantized if q.replace("conv", "bn") in names and "conv" in q]
print(f"{len(quantized)} ternarized layers; convolutions followed by a batch norm: {len(followed)}; "
      f"the others: {sorted(set(quantized) - set(followed))}")
assert sorted(set(quantized) - set(followed)) == ["linear"]

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
assert all(ratios[t]["compression_ratio"] < ratios[t]["quantized_weight_compression_ratio"] for t in (1, 2, 4))
fig, ax = plt.subplots(figsize=(5, 3))
bars = ax.bar([f"t_ex={t}" for t in (1, 2, 4)], [errors[t] for t in (1, 2, 4)], color="C0",
              label="error after rescaling (left)")
ax2 = ax.twinx()
line, = ax2.plot([f"t_ex={t}" for t in (1, 2, 4)],
                 [ratios[t]["quantized_weight_compression_ratio"] for t in (1, 2, 4)],
                 "C3o-", label="compression of the weights (right)")
ax.set_ylabel("min_c ||W − c·W_eff|| / ||W||")
ax2.set_ylabel("compression ×")
ax.legend(handles=[bars, line], loc="upper right", fontsize=8)
plt.show()

# %% [markdown]
# ## Summary
#
# - Eq. (5) sums $t_{ex}$ ternarizations of the same latent weight with
#   nested thresholds; $W_{\text{eff}}$ is a symmetric quantizer with at most $2t_{ex}+1$ levels.
# - One convolution with $W_{\text{eff}}$ computes exactly the sum of the
#   expansion convolutions.
# - Doubling $t_{ex}$ halves the compression (16×, 8×, 4×) and shrinks the
#   approximation error up to a common scale. The scale itself grows with
#   $t_{ex}$; the batch norm after each convolution removes it (the final
#   linear layer has no batch norm after it).
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
