# %% [markdown]
# # 4. The straight-through estimator, Eq. (4)
#
# **Idea.** The quantizer $W \mapsto \alpha T(W)$ is a staircase: flat
# almost everywhere, with jumps at $\pm\Delta$. Its true derivative is zero
# almost everywhere, so plain backpropagation would never move the latent
# weights. The straight-through estimator (STE) pretends the quantizer is the
# identity in the backward pass: the gradient that reaches $W'$ is handed to
# $W$ unchanged — except where $|W| \ge 1$, where it is cut off.

# %%
import inspect

import matplotlib.pyplot as plt
import numpy as np

from tqref import nn
from tqref.data import load_cifar10, normalize
from tqref.functional import conv2d_backward, conv2d_forward, softmax_cross_entropy
from tqref.models import get_model
from tqref.optim import SGD
from tqref.ternary import TernaryConv2d, straight_through_gradient, ternarize, ternarize_model
from tqref.ternary.layers import TernaryMixin
from tqref.ternary.variants import TTQMixin

rng = np.random.default_rng(0)

# %% [markdown]
# ## The equation
#
# $$\frac{\partial L}{\partial W_i} \;=\; \frac{\partial L}{\partial W'_i}\cdot \mathbf 1\big[\,|W_i| < 1\,\big] \tag{4}$$
#
# $\alpha$, $\Delta$ and $\max|W|$ are treated as constants, and the gradient
# is *not* multiplied by $\alpha$. The clip is in absolute units: a latent
# weight that has grown past 1 stops receiving gradient (weight decay still
# pulls it back). The optimiser then updates the latent $W$.

# %%
print(inspect.getsource(straight_through_gradient))
print(inspect.getsource(TernaryMixin.accept_weight_gradient))

# %% [markdown]
# ## The staircase and what the STE passes instead

# %%
w_line = np.linspace(-1.5, 1.5, 3001)
layer_weight = np.concatenate([w_line, [-1.5, 1.5]])  # max|W| = 1.5, so Δ = 0.075
q = ternarize(layer_weight)
w_prime = q.weight(np.float64)[:-2]
fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
axes[0].plot(w_line, w_prime, label="W' = α·T(W)")
axes[0].plot(w_line, w_line, "k:", lw=0.8, label="identity")
axes[0].axvline(q.threshold, color="gray", ls="--", lw=0.8)
axes[0].axvline(-q.threshold, color="gray", ls="--", lw=0.8)
axes[0].set_xlabel("latent W")
axes[0].set_title(f"forward: Δ = {q.threshold:.3f}, α = {q.alpha:.3f}")
axes[0].legend()
ste = straight_through_gradient(np.ones_like(w_line), w_line)
axes[1].plot(w_line, np.zeros_like(w_line), label="true dW'/dW (0 almost everywhere)")
axes[1].plot(w_line, ste, label="STE: 1[|W| < 1]")
axes[1].set_xlabel("latent W")
axes[1].set_title("backward")
axes[1].legend()
plt.show()

# %% [markdown]
# ## Check: a ternary layer's weight gradient is Eq. (4) of the convolution's
#
# The convolution's backward gives $\partial L/\partial W'$ (with $W' = \alpha T$
# fixed); the layer must return exactly that, masked by $|W| < 1$.

# %%
conv = nn.Conv2d(3, 4, 3, padding=1, bias=False, rng=0).astype(np.float64)
conv.params["weight"][0, 0] = [[1.2, -0.3, 0.0], [0.4, -1.7, 0.2], [0.05, 0.9, -0.99]]
layer = TernaryConv2d.from_float(conv)
x = rng.standard_normal((2, 3, 6, 6))
out = layer.forward(x)
dout = rng.standard_normal(out.shape)
layer.backward(dout)
_, dw_prime, _ = conv2d_backward(dout, conv2d_forward(x, layer.effective_weight(), None, 1, 1)[1])
expected = dw_prime * (np.abs(layer.params["weight"]) < 1)
assert np.array_equal(layer.grads["weight"], expected)
print("gradient reaching the latent weights of filter 0, channel 0:\n", layer.grads["weight"][0, 0].round(3))
print("the entries at W = 1.2 and W = −1.7 are cut off:", layer.grads["weight"][0, 0, 0, 0], layer.grads["weight"][0, 0, 1, 1])

# %% [markdown]
# ## What changes with TTQ's trained scales
#
# Trained Ternary Quantization (Zhu et al. 2017) keeps the threshold rule but
# replaces the statistic $\alpha$ by two *learned* scales: $W' = W_p$ above
# $\Delta$, $-W_n$ below $-\Delta$. Now the scales get gradients of their own,
# $\partial L/\partial W_p = \sum_{i\in I_p} \partial L/\partial W'_i$ and
# $\partial L/\partial W_n = -\sum_{i\in I_n} \partial L/\partial W'_i$, and the
# latent gradient is scaled by $W_p$, 1 or $W_n$ depending on the code. In the
# paper's method $\alpha$ is a statistic of $W$: nothing extra is learned.

# %%
print(inspect.getsource(TTQMixin.accept_weight_gradient))

# %% [markdown]
# ## A tiny model trained with each quantizer
#
# The same small network and the same 1,024 CIFAR-10 training images,
# trained for 6 epochs in full precision, with the paper's ternary weights
# (Eq. 4's STE), with TTQ's trained scales, and with binary weights
# ($\alpha\,\mathrm{sign}(W)$, 1 bit).

# %%
data = load_cifar10(verbose=False, download=True)
x_train, y_train = data["train_images"][:1024], data["train_labels"][:1024]
x_test, y_test = data["test_images"][:1000], data["test_labels"][:1000]


def train(variant, epochs=6, batch=64, seed=0, scale_step=True):
    model = get_model("small", seed=seed)
    if variant != "full precision":
        ternarize_model(model, variant=variant)
    # model.lr_multipliers(): parameters that ask for a smaller step (TTQ's scales)
    multipliers = model.lr_multipliers() if scale_step else {}
    opt = SGD(model.parameters_and_gradients(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4,
              lr_multipliers=multipliers)
    order_rng = np.random.default_rng(seed)
    losses = []
    for epoch in range(epochs):
        order = order_rng.permutation(len(x_train))
        total = 0.0
        for start in range(0, len(order), batch):
            idx = order[start:start + batch]
            loss, dlogits = softmax_cross_entropy(model.forward(normalize(x_train[idx])), y_train[idx])
            model.backward(dlogits)
            opt.step()
            total += loss * len(idx)
        losses.append(total / len(order))
    model.eval()
    accuracy = np.mean(model.forward(normalize(x_test)).argmax(1) == y_test)
    return losses, accuracy, model


results = {name: train(variant, scale_step=scale_step) for name, variant, scale_step in
           [("full precision", "full precision", True), ("ternary (paper, STE)", "paper", True),
            ("TTQ, one learning rate", "ttq", False), ("TTQ, scales step 100× smaller", "ttq", True),
            ("binary", "binary", True)]}
fig, ax = plt.subplots(figsize=(6, 3.5))
for name, (losses, accuracy, _) in results.items():
    ax.plot(range(1, len(losses) + 1), losses, marker="o", label=f"{name}: test acc {accuracy:.2f}")
ax.set_xlabel("epoch")
ax.set_ylabel("training loss")
ax.legend(fontsize=8, loc="lower left")
plt.show()
for name in ("full precision", "ternary (paper, STE)", "TTQ, scales step 100× smaller", "binary"):
    losses = results[name][0]
    assert losses[-1] < losses[0] - 0.3, name  # these learn through their surrogate gradients

# %% [markdown]
# TTQ with one learning rate for everything does not learn: its loss stays
# near $\ln 10 \approx 2.30$, the loss of a net that guesses. The gradient of
# $W_p$ is a *sum* over every weight with code +1 in the layer (hundreds to
# tens of thousands of terms), so at the learning rate that suits the
# weights, a scale that starts near 0.1 takes steps of its own size or
# larger; with momentum it overshoots, and its scales end far from their
# start, some with the wrong sign. Giving the scales a 100× smaller step
# (TTQ layers ask for it through `param_lr_multipliers`, and
# `model.lr_multipliers()` hands that to the optimiser) lets TTQ train like
# the others. The paper's $\alpha$, a statistic recomputed from $W$, needs
# no such care. The scales of the two TTQ runs:

# %%
for run in ("TTQ, one learning rate", "TTQ, scales step 100× smaller"):
    print(run)
    for name, m in results[run][2].named_modules():
        if "scale_pos" in m.params:
            print(f"  layer {name:3s} W_p = {float(m.params['scale_pos']):7.3f}   W_n = {float(m.params['scale_neg']):7.3f}")

# %% [markdown]
# ## Summary
#
# - The quantizer's true gradient is zero almost everywhere; the STE passes
#   $\partial L/\partial W'$ straight to the latent $W$, cut off at $|W| \ge 1$ (Eq. 4).
# - The latent weights keep accumulating small updates that can flip a code
#   once they cross $\pm\Delta$: that is how a ternary net learns.
# - TTQ learns its scales; with one learning rate for scales and weights it
#   fails to train here, with a 100× smaller step for the scales it trains.
#   The paper's $\alpha$ is recomputed from $W$ at every step.
#
# ## Exercises
#
# 1. Remove the clip (pass `clip=np.inf` to `straight_through_gradient`).
#    Which entries of the check above change?
# 2. Show that for $t_{ex}$ expansions that all pass the gradient straight
#    through, $\partial L/\partial W = t_{ex}\cdot\partial L/\partial W_{\text{eff}}\cdot\mathbf 1[|W|<1]$.
# 3. A latent weight sits at $W = 0.02$ with $\Delta = 0.075$ and receives a
#    constant gradient $-0.5$ at learning rate $0.1$ (no momentum, no weight
#    decay). After how many steps does its code flip from 0 to +1?
#
# (Solutions are checked in `tests/test_notebook_exercises.py`.)
