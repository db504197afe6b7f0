# %% [markdown]
# # 2. Batch norm, ReLU and the residual block
#
# **Idea.** Batch normalisation rescales each channel with the statistics of
# the current batch while training, and with running averages at test time.
# Its backward pass is the one derivation in a ResNet that needs care,
# because the mean and the variance depend on every input of the channel. A
# CIFAR ResNet stacks basic blocks: conv–BN–ReLU–conv–BN, plus a shortcut
# (identity, or "option A" when the shape changes), then ReLU.

# %%
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
# the batch statistics (PyTorch's convention: momentum 0.1, unbiased running
# variance). In evaluation mode the running averages are used and nothing
# changes. Below, a BatchNorm2d layer sees 200 batches drawn from a channel
# with mean 3 and standard deviation 2.

# %%
layer = nn.BatchNorm2d(1)
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
assert abs(means[-1] - 3) < 0.3 and abs(variances[-1] - 4) < 0.8

layer.eval()
probe = np.full((1, 1, 2, 2), 3.0, np.float32)  # one sample at the mean
print("eval output for an input at the mean:", layer.forward(probe).ravel())
assert np.allclose(layer.forward(probe), 0, atol=0.2)

# %% [markdown]
# ## ReLU and the option-A shortcut
#
# ReLU's backward passes the gradient where the input was positive. The
# option-A shortcut, used where a block halves the image and doubles the
# channels, has no parameters: it keeps every second pixel and pads the new
# channels with zeros (half before, half after, as the PyTorch CIFAR ResNets do).

# %%
print(inspect.getsource(relu_forward), inspect.getsource(relu_backward))
x = np.arange(2 * 4 * 4, dtype=np.float64).reshape(1, 2, 4, 4)
out, _ = option_a_shortcut_forward(x, 4)
print("input channel 0:\n", x[0, 0], "\nshortcut output, channels 0..3:\n", out[0])
assert out.shape == (1, 4, 2, 2)
assert np.array_equal(out[0, 1], x[0, 0, ::2, ::2]) and not out[0, 0].any() and not out[0, 3].any()

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
# of all 269,722 parameters *and* the input:
# $\langle \nabla L, u\rangle \approx (L(\theta + hu) - L(\theta - hu))/2h$.

# %%
model = resnet20(dtype=np.float64, seed=0)
errors = check_module_gradients(model, rng.standard_normal((2, 3, 16, 16)), n_directions=4, h=1e-5)
print("relative errors along 4 random directions:", [f"{e:.1e}" for e in errors])
assert max(errors) < 1e-6

# %% [markdown]
# ## Summary
#
# - Batch norm's training-mode backward has two extra terms, the paths
#   through $\mu$ and $\sigma^2$; the numeric check catches their absence at once.
# - Training mode uses batch statistics and updates running averages;
#   evaluation mode uses the averages and changes nothing.
# - The option-A shortcut is parameter-free subsampling plus zero channels;
#   a block's backward is its forward read backwards, and a whole ResNet-20
#   passes a gradient check to about 1e-9.
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
