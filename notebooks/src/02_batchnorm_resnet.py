# %% [markdown]
# # 2. Batch norm, ReLU and the residual block
#
# **Learning objectives.** After this notebook you can
# - derive batch norm's training-mode backward pass and show, with a numeric
#   gradient check, why the terms through $\mu$ and $\sigma^2$ are needed;
# - say what batch norm computes in training mode and in evaluation mode,
#   and how its running averages move (momentum 0.1, unbiased variance);
# - say exactly what the option-A shortcut outputs: which pixels it keeps and
#   which channel indices are zero;
# - read a basic block's backward pass off its forward pass, and check a whole
#   ResNet-20's gradient along random directions.
#
# **Prerequisites.** Notebook 01 (the convolution's forward and backward pass,
# and the numeric gradient check of `tqref.gradcheck`).
# **Reading time:** about 25 minutes (exercises not included).
# **Method:** `docs/method.md`, section "The CIFAR ResNets" (the basic block
# and the option-A shortcut), and its table of deliberate differences (where
# the zero channels go). Batch norm and the basic block are standard ResNet
# parts, not equations of the paper.
#
# **Idea.** Batch normalisation rescales each channel with the statistics of
# the current batch while training, and with running averages at test time.
# Its backward pass is the derivation in this notebook that needs care,
# because the mean and the variance depend on every input of the channel. A
# CIFAR ResNet stacks basic blocks: conv–BN–ReLU–conv–BN, plus a shortcut
# (identity, or "option A" when the shape changes), then ReLU.

# %%
import copy
import inspect

import matplotlib.pyplot as plt
import numpy as np

from tqref import nn
from tqref.functional import (batchnorm_backward, batchnorm_forward, option_a_shortcut_forward,
                              relu_backward, relu_forward)
from tqref.functional import batchnorm as bn_module
from tqref.gradcheck import check_gradient, check_module_gradients, numeric_gradient, relative_error
from tqref.models import resnet20

rng = np.random.default_rng(0)

# %% [markdown]
# ## Batch norm: the equations (training mode)
#
# For one channel with the $m = N\cdot H\cdot W$ values $x_i$:
#
# $$\mu = \frac1m\sum_i x_i,\quad \sigma^2 = \frac1m\sum_i (x_i-\mu)^2,\quad
# \hat x_i = \frac{x_i-\mu}{\sqrt{\sigma^2+\varepsilon}},\quad y_i = \gamma\hat x_i + \beta .$$
#
# **Backward.** With $d\hat x_i = \gamma\, dy_i$ and $\tilde\sigma = \sqrt{\sigma^2+\varepsilon}$,
# the chain rule through $\hat x$, $\mu$ and $\sigma^2$ collapses to
#
# $$d\beta = \sum_i dy_i,\qquad d\gamma = \sum_i dy_i\,\hat x_i,\qquad
# dx_i = \frac{1}{m\tilde\sigma}\Big(m\, d\hat x_i - \sum_j d\hat x_j - \hat x_i \sum_j d\hat x_j\,\hat x_j\Big).$$
#
# The two subtracted sums are the gradient that flows through $\mu$ and
# through $\sigma^2$: without them you get the evaluation-mode gradient
# $dx_i = \gamma\, dy_i/\tilde\sigma$, where $\mu$ and $\sigma$ are constants.

# %%
print(inspect.getsource(bn_module.batchnorm_backward_naive))

# %% [markdown]
# ## Check: the derivation against central differences

# %%
x = rng.standard_normal((4, 3, 5, 5)) * 2 + 1
gamma, beta = rng.standard_normal(3), rng.standard_normal(3)
running_mean, running_var = np.zeros(3), np.ones(3)


def bn_train():
    return batchnorm_forward(x, gamma, beta, running_mean.copy(), running_var.copy(), True)[0]


out, cache = batchnorm_forward(x, gamma, beta, running_mean.copy(), running_var.copy(), True)
dout = rng.standard_normal(out.shape)
dx, dgamma, dbeta = batchnorm_backward(dout, cache)
for name, array, grad in [("x", x, dx), ("gamma", gamma, dgamma), ("beta", beta, dbeta)]:
    # h = 1e-4: BN is smooth, and a larger step keeps rounding error small
    print(f"relative error of d{name}: {check_gradient(bn_train, array, grad, dout, h=1e-4, name=name):.1e}")

# %% [markdown]
# What goes wrong if we forget that $\mu$ and $\sigma^2$ depend on $x$? The
# evaluation-mode formula, used in training mode, fails the check badly:

# %%
inv_std = 1 / np.sqrt(x.var(axis=(0, 2, 3)) + 1e-5)
naive_dx = dout * (gamma * inv_std)[None, :, None, None]
numeric_dx = numeric_gradient(bn_train, x, dout, h=1e-4)
print(f"relative error without the μ and σ² terms: {relative_error(naive_dx, numeric_dx):.1e}")
assert relative_error(naive_dx, numeric_dx) > 1e-2

# %% [markdown]
# ## Training mode versus evaluation mode
#
# In training mode each channel of the output has mean 0 and variance 1
# (before γ, β), whatever the input, and the running averages move towards
# the batch statistics with PyTorch's convention:
# $r_\mu \leftarrow 0.9\,r_\mu + 0.1\,\mu$ and
# $r_{\sigma^2} \leftarrow 0.9\,r_{\sigma^2} + 0.1\,\frac{m}{m-1}\sigma^2$
# (momentum 0.1, *unbiased* batch variance). In evaluation mode the running
# averages are used and nothing changes. First one training step, checked
# against these formulas:

# %%
layer = nn.BatchNorm2d(1)  # γ = 1, β = 0, running mean 0, running variance 1
batch = (rng.standard_normal((16, 1, 4, 4)) * 2 + 3).astype(np.float32)
y = layer.forward(batch)
print(f"output: mean {y.mean():.1e}, variance {y.var():.6f}")
print("running mean", layer.buffers["running_mean"][0], "= 0.1 · batch mean", 0.1 * batch.mean())
print("running var ", layer.buffers["running_var"][0], "= 0.9 + 0.1 · unbiased batch variance",
      0.9 + 0.1 * batch.var(ddof=1))
assert abs(y.mean()) < 1e-5 and abs(y.var() - 1) < 1e-3  # 1 − ε/σ², not exactly 1
assert np.isclose(layer.buffers["running_mean"][0], 0.1 * batch.mean(), rtol=1e-5)
assert np.isclose(layer.buffers["running_var"][0], 0.9 + 0.1 * batch.var(ddof=1), rtol=1e-5)

# %% [markdown]
# Then 200 more batches from the same channel (mean 3, standard deviation 2):
# the running averages approach 3 and 4. In evaluation mode an input at the
# mean maps to about 0, and the running averages stay where they are.

# %%
means, variances = [], []
for step in range(200):
    layer.forward((rng.standard_normal((16, 1, 4, 4)) * 2 + 3).astype(np.float32))
    means.append(layer.buffers["running_mean"][0])
    variances.append(layer.buffers["running_var"][0])
fig, ax = plt.subplots(figsize=(6, 3))
ax.plot(means, label="running mean")
ax.plot(variances, label="running variance")
ax.axhline(3, color="C0", ls=":")
ax.axhline(4, color="C1", ls=":")
ax.set_xlabel("training step")
ax.legend()
plt.show()
print(f"after 200 steps: running mean {means[-1]:.3f}, running variance {variances[-1]:.3f}")
assert abs(means[-1] - 3) < 0.3 and abs(variances[-1] - 4) < 0.8

layer.eval()
before = {k: v.copy() for k, v in layer.buffers.items()}
probe = np.full((1, 1, 2, 2), 3.0, np.float32)  # one sample at the mean
print("eval output for an input at the mean:", layer.forward(probe).ravel())
assert np.allclose(layer.forward(probe), 0, atol=0.2)
assert all(np.array_equal(before[k], layer.buffers[k]) for k in before)  # eval changes nothing

# %% [markdown]
# ## ReLU and the option-A shortcut
#
# ReLU's backward passes the gradient where the input was positive.

# %%
print(inspect.getsource(relu_forward), inspect.getsource(relu_backward))

# %% [markdown]
# The option-A shortcut is used where a block halves the image and doubles
# the channels (in ResNet-20: 16 → 32 channels at `layer2.0`, 32 → 64 at
# `layer3.0`). It has no parameters. It keeps the pixels $(2i, 2j)$ and puts
# the $C$ input channels in the *middle* of the output channels: with
# $p = \lfloor(C_{out} - C)/2\rfloor$,
#
# $$\text{out}[n, p + c, i, j] = x[n, c, 2i, 2j] \quad (c = 0, \dots, C-1),
# \qquad \text{channels } 0,\dots,p-1 \text{ and } p+C,\dots,C_{out}-1 \text{ are } 0 .$$
#
# At `layer2.0` that is $p = 8$: channels 0–7 and 24–31 are zero, channels
# 8–23 hold the 16 input channels. At `layer3.0`, $p = 16$: channels 0–15
# and 48–63 are zero. This is the layout of the common PyTorch CIFAR ResNet
# (`F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, C // 2, C // 2))`). The authors'
# code instead appends all the zero channels after the input
# (`torch.cat((x, x.mul(0)), 1)`: input in channels $0,\dots,C-1$);
# `docs/method.md` lists this among tqref's deliberate differences.
# A small example first (2 → 4 channels, so $p = 1$), then both shortcuts of
# ResNet-20 on random inputs (random, so that no kept value is zero by chance):

# %%
x = np.arange(2 * 4 * 4, dtype=np.float64).reshape(1, 2, 4, 4)
out, _ = option_a_shortcut_forward(x, 4)
print("input channels 0 and 1:\n", x[0], "\nshortcut output, channels 0..3:\n", out[0])
assert np.array_equal(out[0, 1:3], x[0, :, ::2, ::2]) and not out[0, 0].any() and not out[0, 3].any()

blocks = dict(resnet20(dtype=np.float64, seed=0).named_modules())
for name in ("layer2.0", "layer3.0"):
    shortcut = blocks[name].shortcut
    C, C_out = shortcut.in_channels, shortcut.out_channels
    x = rng.standard_normal((2, C, 8, 8))
    out = shortcut.forward(x)
    kept = x[:, :, ::2, ::2]
    zero = np.flatnonzero(~out.any(axis=(0, 2, 3)))  # channels that are exactly 0 everywhere
    p = (C_out - C) // 2
    runs = np.split(zero, np.flatnonzero(np.diff(zero) != 1) + 1)  # consecutive indices
    print(f"{name}.shortcut, {C} -> {C_out} channels: zero channels "
          + " and ".join(f"{r[0]}–{r[-1]}" for r in runs) + f"; channels {p}–{p + C - 1} = x[:, :, ::2, ::2]")
    assert zero.tolist() == list(range(p)) + list(range(p + C, C_out))
    assert np.array_equal(out[:, p:p + C], kept)
    # the authors' layout is the same channels in another order
    appended = np.concatenate([kept, np.zeros_like(kept)], axis=1)
    order = np.r_[p:p + C, 0:p, p + C:C_out]
    assert np.array_equal(out[:, order], appended)

# %% [markdown]
# The last assert shows that the two layouts differ only in the order of the
# shortcut's channels. So a block with the authors' layout computes the same
# as tqref's block with its output channels reordered, once the filters of
# the block's second convolution and the parameters of its second batch norm
# are reordered the same way. The next cell builds that block and checks it;
# the layers after it absorb the order in the input slices of their weights.
# The layout therefore does not change what the network can compute. It
# matters when weights trained with one layout are loaded into the other.

# %%
block = blocks["layer3.0"]
p, C, C_out = 16, 32, 64
order = np.r_[p:p + C, 0:p, p + C:C_out]  # as in the loop above
block.eval()  # evaluation mode: bn2 uses the running statistics set here
# per-channel values that differ from channel to channel, so that a wrong order would show
block.bn2.params["weight"][...] = rng.uniform(0.5, 2, C_out)
block.bn2.params["bias"][...] = rng.standard_normal(C_out)
block.bn2.buffers["running_mean"][...] = rng.standard_normal(C_out)
block.bn2.buffers["running_var"][...] = rng.uniform(0.5, 2, C_out)
theirs = copy.deepcopy(block)  # the same block with the authors' shortcut layout
theirs.conv2.params["weight"] = theirs.conv2.params["weight"][order].copy()
for store in (theirs.bn2.params, theirs.bn2.buffers):
    for key in store:
        store[key] = store[key][order].copy()
x = rng.standard_normal((2, C, 8, 8))
main = theirs.bn2.forward(theirs.conv2.forward(theirs.bn1.forward_relu(theirs.conv1.forward(x))))
kept = x[:, :, ::2, ::2]
out_theirs = np.maximum(main + np.concatenate([kept, np.zeros_like(kept)], axis=1), 0)
print("max |authors' layout − tqref's block with channels reordered| =",
      np.abs(out_theirs - block.forward(x)[:, order]).max())
assert np.allclose(out_theirs, block.forward(x)[:, order], atol=1e-12)

# %% [markdown]
# ## The basic block, forward and backward
#
# The block's backward is its forward read from the bottom up: the final ReLU,
# then the sum splits the gradient into the main path and the shortcut, and
# the two gradients that reach $x$ are added.

# %%
print(inspect.getsource(nn.BasicBlock.forward))
print(inspect.getsource(nn.BasicBlock.backward))

# %% [markdown]
# ## Check: a whole ResNet-20, every parameter at once
#
# For a network this size we check along random directions $u$ in the space
# of all its parameters (printed below) *and* the input:
# $\langle \nabla L, u\rangle \approx (L(\theta + hu) - L(\theta - hu))/2h$.

# %%
model = resnet20(dtype=np.float64, seed=0)
print(f"ResNet-20: {model.num_parameters():,} parameters")
assert model.num_parameters() == 269_722
errors = check_module_gradients(model, rng.standard_normal((2, 3, 16, 16)), n_directions=4, h=1e-5)
print("relative errors along 4 random directions:", [f"{e:.1e}" for e in errors])
assert max(errors) < 1e-8

# %% [markdown]
# ## Summary
#
# - Batch norm's training-mode backward has two extra terms, the paths
#   through $\mu$ and $\sigma^2$; the numeric check catches their absence at once.
# - Training mode uses batch statistics and updates running averages;
#   evaluation mode uses the averages and changes nothing.
# - The option-A shortcut is parameter-free subsampling plus zero channels:
#   in tqref the input fills the middle channels $p, \dots, p+C-1$ and the
#   channels before and after them are zero ($p = C/2$ on each side when the
#   channels double); the authors' code puts all zeros after the input, and
#   the two layouts differ only by a channel order.
# - A block's backward is its forward read backwards, and a whole ResNet-20
#   passes a gradient check with relative errors below 1e-8 along every direction tried.
#
# ## Exercises
#
# 1. Show that for a channel in training mode $\sum_i dx_i = 0$ and, as
#    $\varepsilon \to 0$, $\sum_i dx_i\,\hat x_i = 0$. Why must this hold?
# 2. Evaluate the same batch in training and in evaluation mode after setting
#    the running statistics to the batch's mean and *unbiased* variance. By
#    what factor do the two normalisations differ?
# 3. Replace option A by an identity on the first $C$ channels and zeros
#    elsewhere (no subsampling) — which shape check fails, and where?
#
# (Solutions are checked in `tests/test_notebook_exercises.py`.)
