# %% [markdown]
# # 4. The straight-through estimator, Eq. (4)
#
# **Learning objectives.** After this notebook you can
# - derive the exact Jacobian of the quantizer $W \mapsto \alpha(W)\,T(W)$ where it exists
#   ($J = TT^\top/n$), say where it does not, and check it by central differences;
# - explain why training with that exact gradient can only rescale $\alpha$ and cannot
#   choose codes weight by weight, and why it nearly vanishes for a convolution followed by
#   batch norm;
# - state Eq. (4), the straight-through estimator clipped at $|W| < 1$, and check that
#   a tqref ternary layer implements it;
# - compare how the paper's quantizer, TTQ's trained scales and binary weights train a
#   small net, and say why TTQ's scales need a smaller step.
#
# **Prerequisites.** Notebook 01 (a convolution's weight gradient, `conv2d_backward`) and
# notebook 03 ($\Delta$, $\alpha$, $T$ of Eqs. (1)–(3), `ternarize`); the batch-norm remark
# uses training-mode batch norm from notebook 02. **Reading time:** about 30 minutes.
# **Method:** `docs/method.md`, Eq. (4).
#
# **Idea.** A ternary layer computes with $W' = \alpha\,T(W)$, but the optimiser updates the
# latent $W$, so backpropagation needs $\partial L/\partial W$. The codes $T(W)$ are a
# staircase: constant, with jumps at $\pm\Delta$. The scale $\alpha$ is not: it is a mean of
# $|W|$ and moves with every weight above the threshold. So the exact derivative of
# $\alpha\,T(W)$ is *not* zero. We derive it, check it numerically and train with it: it can
# make $\alpha$ larger or smaller, one number per layer, and that is all. The
# straight-through estimator (STE) of Eq. (4) replaces it by the identity, clipped at
# $|W| < 1$. That replacement lets every weight move on its own, so the codes can learn.

# %%
import inspect

import matplotlib.pyplot as plt
import numpy as np

import tqref
from tqref import nn
from tqref.data import load_cifar10, normalize
from tqref.functional import softmax_cross_entropy
from tqref.models import get_model
from tqref.optim import SGD
from tqref.ternary import (TernaryConv2d, TernaryLinear, straight_through_gradient, ternarize,
                           ternarize_model)
from tqref.ternary.convert import VARIANTS, is_quantized_layer
from tqref.ternary.layers import TernaryMixin
from tqref.ternary.variants import TTQMixin

rng = np.random.default_rng(0)

# %% [markdown]
# ## The exact Jacobian of $W' = \alpha\,T(W)$
#
# Recall Eqs. (1)–(3): $\Delta = \delta\max_i|W_i|$, $I_\Delta = \{i : |W_i| \ge \Delta\}$,
# $\alpha = \frac1n\sum_{i\in I_\Delta}|W_i|$ with $n = |I_\Delta|$, and $T_i = \operatorname{sign}(W_i)$
# on $I_\Delta$, $0$ elsewhere.
#
# **Where a derivative exists.** Take $W \ne 0$ with no weight exactly on the threshold:
# $|W_i| \ne \Delta$ for every $i$. $\Delta$ moves when the largest weight moves, but it moves
# continuously, so a small enough change of $W$ leaves every weight on its side of the
# threshold. (A tie for the largest weight does no harm: $\Delta$ stays continuous.) In that
# neighbourhood $I_\Delta$, $n$ and every $T_i$ are constant, and only $\alpha$ changes. For
# $j \in I_\Delta$, $|W_j| \ge \Delta > 0$, so $|W_j|$ is differentiable with derivative
# $\operatorname{sign}(W_j) = T_j$; a $W_j$ outside $I_\Delta$ does not appear in $\alpha$. Hence
#
# $$\frac{\partial \alpha}{\partial W_j} = \frac{T_j}{n}, \qquad
# \frac{\partial W'_i}{\partial W_j} = T_i\,\frac{\partial \alpha}{\partial W_j} = \frac{T_i T_j}{n},
# \qquad J = \frac{T\,T^\top}{n}.$$
#
# With $g = \partial L/\partial W'$ and $\partial L/\partial\alpha = \sum_i T_i g_i$ (because $W' = \alpha T$):
#
# $$\frac{\partial L}{\partial W_j} = \sum_i g_i \frac{T_i T_j}{n}
# = T_j\,\frac{1}{n}\sum_i T_i\,g_i = \frac{T_j}{n}\,\frac{\partial L}{\partial \alpha}.$$
#
# Read it weight by weight:
# - a weight below the threshold ($T_j = 0$) gets exactly zero;
# - every weight above it gets the same magnitude $|\partial L/\partial\alpha|/n$, with sign
#   $T_j\cdot\operatorname{sign}(\partial L/\partial\alpha)$. A gradient step moves all their
#   $|W_j|$ by the same amount: it makes $\alpha$ larger or smaller.
#
# Since $T^\top T = n$, $J$ is the orthogonal projection onto the line through $T$
# ($J^2 = J$, rank 1). Of the many numbers in $g$, the exact gradient keeps one: the
# component of $g$ along $T$.
#
# **Where it does not.** Where some $|W_i| = \Delta$ (with $W \ne 0$), $W'$ jumps. When $W_i$
# crosses $\Delta$, $T_i$ switches between $0$ and $\pm1$, so $W'_i$ changes by $\alpha$; and $n$
# changes by one, so $\alpha$ jumps too. No derivative exists there. That set has zero
# volume: latent weights almost never sit exactly on it, and the derivative that
# backpropagation uses never sees the jumps. Yet the jumps are the only places where a code
# changes. (The common shortcut "the quantizer is flat almost everywhere, so its derivative
# is zero" is true of $T$, not of $\alpha\,T$.)
#
# The exact gradient in code, for one tensor with one $\Delta$ and one $\alpha$:

# %%
def exact_gradient(grad_wprime, latent_weight):
    """∂L/∂W of W' = α(W)·T(W), where no |W_i| equals Δ:  T_j · (Σ_i T_i g_i) / n."""
    codes = ternarize(latent_weight).codes.astype(grad_wprime.dtype)
    n = max(np.count_nonzero(codes), 1)  # n = 0 only for W = 0
    return codes * ((codes * grad_wprime).sum() / n)


# %% [markdown]
# ## Check: central differences agree with $J = TT^\top/n$
#
# A small convolution weight of 4×3×2×2 = 48 values, in float64. Each column of the
# numerical Jacobian is $(W'(W + h e_j) - W'(W - h e_j))/2h$. We first check that no weight lies
# within $100h$ of $\Delta$, so no step of size $h$ crosses a jump.

# %%
def quantized(w):
    q = ternarize(w)
    return q.alpha * q.codes.astype(np.float64)


W = 0.3 * rng.standard_normal((4, 3, 2, 2))
q = ternarize(W)
h = 1e-6
margin = np.min(np.abs(np.abs(W) - q.threshold))
assert margin > 100 * h  # away from the jumps
J_numeric = np.empty((W.size, W.size))
for j in range(W.size):
    step = np.zeros(W.size)
    step[j] = h
    step = step.reshape(W.shape)
    J_numeric[:, j] = ((quantized(W + step) - quantized(W - step)) / (2 * h)).ravel()
T = q.codes.ravel().astype(np.float64)
n = np.count_nonzero(T)
J_formula = np.outer(T, T) / n
print(f"{W.size} weights, Δ = {q.threshold:.4f}, n = {n} codes ≠ 0, closest |W_i| to Δ: {margin:.4f} away")
print(f"largest |J_numeric − T Tᵀ/n| = {np.abs(J_numeric - J_formula).max():.1e}; "
      f"largest entry of J: {np.abs(J_formula).max():.4f} (= 1/n = {1 / n:.4f})")
assert np.allclose(J_numeric, J_formula, rtol=0, atol=1e-8)
assert np.count_nonzero(J_numeric[:, T == 0]) == 0 and np.count_nonzero(J_numeric[T == 0, :]) == 0
assert np.allclose(J_formula @ J_formula, J_formula) and np.linalg.matrix_rank(J_formula) == 1  # a projection
g = rng.standard_normal(W.shape)
assert np.allclose(exact_gradient(g, W).ravel(), J_numeric.T @ g.ravel(), rtol=0, atol=1e-8)
above = exact_gradient(g, W)[q.codes != 0]
print("exact gradient of the weights above Δ: distinct magnitudes", np.unique(np.abs(above).round(12)))

# %% [markdown]
# At a jump the difference quotient does not converge. Put the smallest weight of
# $I_\Delta$ exactly on the threshold and step it by $\pm h$: its quantized value changes by
# $\alpha$ however small $h$ is, and $\alpha$ itself differs on the two sides.

# %%
i = np.flatnonzero(q.codes.ravel() != 0)[np.argmin(np.abs(W.ravel()[q.codes.ravel() != 0]))]
W_edge = W.copy().ravel()
W_edge[i] = np.sign(W_edge[i]) * q.threshold  # Δ is unchanged: W_i is not the largest weight
for h_jump in (1e-3, 1e-6, 1e-9):
    plus, minus = W_edge.copy(), W_edge.copy()
    plus[i] += np.sign(W_edge[i]) * h_jump   # stays at or above Δ: code ±1
    minus[i] -= np.sign(W_edge[i]) * h_jump  # falls below Δ: code 0
    jump = abs(quantized(plus)[i] - quantized(minus)[i])
    alpha_plus, alpha_minus = ternarize(plus).alpha, ternarize(minus).alpha
    print(f"h = {h_jump:.0e}: W'_i changes by {jump:.4f}; α = {alpha_plus:.4f} on the ±1 side, "
          f"{alpha_minus:.4f} on the 0 side")
    assert np.isclose(jump, alpha_plus) and abs(alpha_plus - alpha_minus) > 1e-3

# %% [markdown]
# ## What the STE passes instead: Eq. (4)
#
# $$\frac{\partial L}{\partial W_i} \;=\; \frac{\partial L}{\partial W'_i}\cdot \mathbf 1\big[\,|W_i| < 1\,\big] \tag{4}$$
#
# The STE treats $\alpha$, $\Delta$ and $\max|W|$ as constants and replaces $J$ by the
# identity: each latent weight receives its own $\partial L/\partial W'_i$, not multiplied by
# $\alpha$. The part of $g$ that $J$ throws away, "which weight should be larger or smaller",
# is exactly what the STE keeps. The latent weights accumulate it, and a weight whose running
# sum carries it across $\pm\Delta$ changes its code. The STE is not the derivative of the
# forward pass; it is a surrogate, justified by what it trains (below).
#
# The factor $\mathbf 1[|W_i| < 1]$ is the derivative of the hard tanh $\max(-1, \min(1, W))$:
# the STE differentiates as if the quantizer were $W$ itself inside $\pm1$ and constant
# outside. The clip is in absolute units. A latent
# weight that has grown past 1 receives no gradient from the loss, and weight decay, which
# the optimiser adds to the latent weights, pulls it back. The optimiser then updates the
# latent $W$.

# %%
print(inspect.getsource(straight_through_gradient))
print(inspect.getsource(TernaryMixin.accept_weight_gradient))

# %% [markdown]
# One weight $W_0$ of a 10-weight layer, swept from −1.5 to 1.5 with the other nine held
# fixed. Left: its quantized value $W'_0$ (dashed: $\pm\Delta$ while another weight is the
# largest). Right: the exact diagonal entry $\partial W'_0/\partial W_0 = T_0^2/n$ (jumps
# marked), next to the STE's $\mathbf 1[|W_0| < 1]$. The off-diagonal entries $T_iT_0/n$ are
# not drawn; for $i$ and $0$ both in $I_\Delta$ they have the same size, $1/n$.

# %%
others = np.array([0.8, -0.6, 0.45, -0.3, 0.2, -0.05, 0.03, -0.02, 0.01])
w_line = np.linspace(-1.5, 1.5, 3001)
sweep = [ternarize(np.concatenate([[w], others])) for w in w_line]
w0_prime = np.array([s.alpha * s.codes[0] for s in sweep])
diagonal = np.array([s.codes[0] ** 2 / np.count_nonzero(s.codes) for s in sweep])
jumps = np.flatnonzero(np.diff(w0_prime) ** 2 > (10 * np.diff(w_line)) ** 2)  # W'_0 jumps here
delta_inner = 0.05 * np.abs(others).max()
fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
axes[0].plot(w_line, w0_prime, ".", ms=1, label="W'_0 = α·T_0")
axes[0].plot(w_line, w_line, "k:", lw=0.8, label="identity")
for x in (-delta_inner, delta_inner):
    axes[0].axvline(x, color="gray", ls="--", lw=0.8)
axes[0].set_xlabel("latent W_0")
axes[0].set_title("forward, the other nine weights fixed")
axes[0].legend()
axes[1].plot(w_line, diagonal, ".", ms=1, label="exact ∂W'_0/∂W_0 = T_0²/n")
axes[1].plot(w_line, straight_through_gradient(np.ones_like(w_line), w_line), label="STE: 1[|W_0| < 1]")
for k in jumps:
    axes[1].axvline(w_line[k], color="C3", ls=":", lw=0.8)
axes[1].set_xlabel("latent W_0")
axes[1].set_ylim(-0.05, 1.35)
axes[1].set_title("backward (red: jumps, no derivative)")
axes[1].legend(loc="upper center", ncol=2, fontsize=8)
plt.show()
print("jumps of W'_0 near W_0 =", w_line[jumps].round(3), "| slope values of the exact curve:",
      np.unique(diagonal.round(4)))
assert set(np.unique(diagonal.round(4))) == {0.0, round(1 / 7, 4), round(1 / 6, 4)}

# %% [markdown]
# The slope of $W'_0$ is $1/7$ on $I_\Delta$ (seven codes are non-zero). Once $|W_0| > 0.8$,
# $W_0$ is the largest weight and $\Delta = 0.05\,|W_0|$ grows with it. Past $|W_0| = 1$,
# $\Delta$ exceeds 0.05, the weight $-0.05$ drops out of $I_\Delta$, and $n = 6$. The jumps at
# $\pm\Delta$ and at $|W_0| = 1$ are where codes change; neither backward curve sees them.
#
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
B = tqref.current_backend()  # the backend the layer ran on, so the two are computed alike
_, dw_prime, _ = B.conv2d_backward(dout, B.conv2d_forward(x, layer.effective_weight(), None, 1, 1)[1])
expected = dw_prime * (np.abs(layer.params["weight"]) < 1)
assert np.array_equal(layer.grads["weight"], expected)
print("gradient reaching the latent weights of filter 0, channel 0:\n", layer.grads["weight"][0, 0].round(3))
print("the entries at W = 1.2 and W = −1.7 are cut off:", layer.grads["weight"][0, 0, 0, 0],
      layer.grads["weight"][0, 0, 1, 1])
assert layer.grads["weight"][0, 0, 0, 0] == 0 and layer.grads["weight"][0, 0, 1, 1] == 0

# weight decay still reaches a cut-off weight: one SGD step with zero loss gradient
opt = SGD(layer.parameters_and_gradients(), lr=0.1, momentum=0.0, weight_decay=5e-4)
opt.step()
print("after one step with weight decay 5e-4 at lr 0.1, W = 1.2 became", layer.params["weight"][0, 0, 0, 0])
assert np.isclose(layer.params["weight"][0, 0, 0, 0], 1.2 * (1 - 0.1 * 5e-4))

# %% [markdown]
# ## Training with each gradient: a least-squares toy
#
# A ternary linear map of 32 weights, $\hat y = X\,\alpha T(W)$, fitted to $y = Xw^\ast$ with
# $w^\ast = 0.5\,T^\ast$ for random codes $T^\ast$ (256 random inputs). The latent $W$
# starts as small random numbers. We take 300 plain SGD steps (learning rate 0.05, no
# momentum, no weight decay), once with the exact gradient and once with the STE.

# %%
X = rng.standard_normal((256, 32))
T_star = rng.choice([-1, 0, 1], size=32)
y = X @ (0.5 * T_star)
W_start = 0.1 * rng.standard_normal(32)


def fit(gradient_rule, steps=300, lr=0.05):
    w = W_start.copy()
    losses, moves = [], []
    for _ in range(steps):
        q = ternarize(w)
        residual = X @ (q.alpha * q.codes) - y
        losses.append(0.5 * np.mean(residual ** 2))
        grad_wprime = X.T @ residual / len(y)  # ∂L/∂W'
        new = w - lr * gradient_rule(grad_wprime, w)
        moves.append((q.codes.copy(), np.abs(new) - np.abs(w)))  # codes used, change of |W|
        w = new
    return np.array(losses), w, moves


toy = {"exact gradient": fit(exact_gradient), "STE, Eq. (4)": fit(straight_through_gradient)}
start_codes = ternarize(W_start).codes
fig, ax = plt.subplots(figsize=(6, 3.2))
for name, (losses, w, _) in toy.items():
    ax.semilogy(losses, label=name)
    end_codes = ternarize(w).codes
    print(f"{name:15s} loss {losses[0]:.4g} → {losses[-1]:.4g}; codes changed: "
          f"{np.sum((start_codes != 0) & (end_codes == 0))} ±1→0, {np.sum((start_codes == 0) & (end_codes != 0))} "
          f"0→±1, {np.sum(start_codes * end_codes == -1)} sign flips; codes equal to T*: "
          f"{np.mean(end_codes == T_star):.0%}; α = {ternarize(w).alpha:.3f}")
ax.set_xlabel("step")
ax.set_ylabel("loss")
ax.legend()
plt.show()

# %% [markdown]
# What the printout shows, and the checks below assert:
# - **Exact gradient.** At every step the weights below $\Delta$ do not move, and all weights
#   above it change $|W|$ by the same amount. No code changes sign. Some codes do change:
#   here the weights above $\Delta$ shrink together, faster than $\Delta$ (which shrinks
#   $\delta = 0.05$ times as fast, with the largest weight), and the smallest of them fall
#   below it. Which ones fall is decided by their rank in $|W|$, not by what the loss asks of
#   each weight. The loss stops falling
#   within 200 steps, a little below where it started, at a point where
#   $\partial L/\partial\alpha = 0$: $\alpha$ is the least-squares best scale for the codes it
#   ended with.
# - **STE.** Every weight follows its own gradient. Codes flip sign and cross zero until
#   they equal $T^\ast$, $\alpha$ reaches 0.5, and the loss falls by more than nine orders
#   of magnitude.

# %%
losses, w_exact, moves = toy["exact gradient"]
shared = []
for codes, change in moves:
    assert np.all(change[codes == 0] == 0)  # below Δ: no move
    assert np.ptp(change[codes != 0]) < 1e-12  # above Δ: one shared change of |W|
    shared.append(change[codes != 0][0])
print(f"exact run: the weights above Δ changed |W| by {sum(shared):+.4f} in total (all by the same amount)")
assert sum(shared) < 0
end_codes = ternarize(w_exact).codes
assert np.sum(start_codes * end_codes == -1) == 0  # no sign flip
print(f"exact run: loss at steps 0, 100, 200, 299: {losses[[0, 100, 200, 299]].round(6)}")
assert np.ptp(losses[200:]) < 1e-6 * losses[-1] and losses[-1] > 0.9 * losses[0]  # stalled, little gained
Xc = X @ end_codes
best_alpha = (Xc @ y) / (Xc @ Xc)  # least squares in α for the final codes
print(f"exact run: final α = {ternarize(w_exact).alpha:.6f}, best α for its final codes = {best_alpha:.6f}")
assert np.isclose(ternarize(w_exact).alpha, best_alpha, rtol=1e-6)
losses_ste, w_ste, _ = toy["STE, Eq. (4)"]
assert np.array_equal(ternarize(w_ste).codes, T_star) and losses_ste[-1] < 1e-9 * losses_ste[0]
assert abs(ternarize(w_ste).alpha - 0.5) < 1e-3
assert np.sum(start_codes * ternarize(w_ste).codes == -1) > 0  # the STE flips signs

# %% [markdown]
# ## What changes with TTQ's trained scales
#
# Trained Ternary Quantization (Zhu et al. 2017) keeps the threshold rule but
# replaces the statistic $\alpha$ by two *learned* scales: $W' = W_p$ above
# $\Delta$, $-W_n$ below $-\Delta$. Now the scales get gradients of their own,
# $\partial L/\partial W_p = \sum_{i\in I_p} \partial L/\partial W'_i$ and
# $\partial L/\partial W_n = -\sum_{i\in I_n} \partial L/\partial W'_i$ (exact: $W'$ is linear
# in them for fixed codes), and the latent gradient is a *scaled* STE: multiplied by $W_p$,
# 1 or $W_n$ depending on the code, with no clip. In the paper's method $\alpha$ is a
# statistic of $W$: nothing extra is learned.

# %%
print(inspect.getsource(TTQMixin.accept_weight_gradient))

# %% [markdown]
# ## A tiny model trained with each quantizer
#
# The same small network (three conv–batch-norm–ReLU blocks and a linear classifier, all
# four weight layers quantized) and the same 1,024 CIFAR-10 training images, trained for 6
# epochs (SGD, Nesterov momentum 0.9, learning rate 0.05, weight decay 5e-4): in full
# precision; with the paper's ternary weights and Eq. (4)'s STE; with the same ternary
# weights and the exact gradient; with TTQ's trained scales; and with binary weights
# ($\alpha\,\mathrm{sign}(W)$, 1 bit). The exact-gradient layers are the paper's layers with
# one hook replaced, registered as a variant the way `tqref.ternary.variants` registers TTQ.

# %%
class ExactGradientMixin:
    def accept_weight_gradient(self, dw):
        self.grads["weight"][...] = exact_gradient(dw, self.params["weight"])


class ExactConv2d(ExactGradientMixin, TernaryConv2d):
    pass


class ExactLinear(ExactGradientMixin, TernaryLinear):
    pass


VARIANTS["exact"] = (ExactConv2d, ExactLinear, {})

data = load_cifar10(verbose=False, download=True)
x_train, y_train = data["train_images"][:1024], data["train_labels"][:1024]
x_test, y_test = data["test_images"][:1000], data["test_labels"][:1000]


def codes_of(model):
    return {name: m.quantize()[0].codes.copy() for name, m in model.named_modules() if is_quantized_layer(m)}


def train(variant, epochs=6, batch=64, seed=0, scale_step=True):
    model = get_model("small", seed=seed)
    if variant != "full precision":
        ternarize_model(model, variant=variant)
    # model.lr_multipliers(): parameters that ask for a smaller step (TTQ's scales)
    multipliers = model.lr_multipliers() if scale_step else {}
    opt = SGD(model.parameters_and_gradients(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4,
              lr_multipliers=multipliers)
    start_codes = codes_of(model)
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
    return losses, accuracy, model, start_codes, codes_of(model)


results = {name: train(variant, scale_step=scale_step) for name, variant, scale_step in
           [("full precision", "full precision", True), ("ternary (paper, STE)", "paper", True),
            ("ternary, exact gradient", "exact", True),
            ("TTQ, one learning rate", "ttq", False), ("TTQ, scales step 100× smaller", "ttq", True),
            ("binary", "binary", True)]}
fig, ax = plt.subplots(figsize=(9, 3.5))
for name, (losses, accuracy, *_) in results.items():
    ax.plot(range(1, len(losses) + 1), losses, marker="o", label=f"{name}: test acc {accuracy:.2f}")
ax.set_xlabel("epoch")
ax.set_ylabel("training loss (mean over the epoch)")
ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
fig.tight_layout()
plt.show()
for name, (losses, accuracy, *_) in results.items():
    print(f"{name:30s} loss, epoch 1 → 6: {losses[0]:.3f} → {losses[-1]:.3f}   test accuracy {accuracy:.3f}")
for name in ("full precision", "ternary (paper, STE)", "TTQ, scales step 100× smaller", "binary"):
    losses = results[name][0]
    assert losses[-1] < losses[0] - 0.3, name  # these learn through their surrogate gradients

# %% [markdown]
# ## The exact gradient in the small net
#
# The exact-gradient run learns far less than the STE run, and its convs never change a
# code, for a reason the derivation predicts. Each conv is followed by batch norm, which in
# training mode divides by the batch's standard deviation: scaling the conv's weights by any
# $s > 0$ leaves its output unchanged (up to BN's $\varepsilon$). So $L$ does not depend on
# $\alpha$, $\partial L/\partial\alpha = \sum_i T_i g_i \approx 0$, and the exact gradient
# $T_j(\partial L/\partial\alpha)/n$ vanishes. The classifier has no batch norm after it, so its
# $\alpha$ does get a gradient. Weight decay multiplies a layer's weights by one factor, and
# $\Delta$ scales with them, so decay alone never changes a code. What the run learns, it
# learns through the batch norms' $\gamma$ and $\beta$ and through the classifier.
#
# On one batch at the start: $|\partial L/\partial\alpha|$ against $\sum_{i\in I_\Delta}|g_i|$,
# the size it would have if every $g_i$ agreed in sign with $T_i$. Then the codes each
# ternary run changed in 6 epochs.

# %%
probe = ternarize_model(get_model("small", seed=0), clip=np.inf)  # no clip: grads are g = ∂L/∂W'
loss, dlogits = softmax_cross_entropy(probe.forward(normalize(x_train[:64])), y_train[:64])
probe.backward(dlogits)
for name, m in probe.named_modules():
    if is_quantized_layer(m):
        codes, grad = m.quantize()[0].codes, m.grads["weight"].astype(np.float64)
        ratio = abs(np.sum(codes * grad)) / np.sum(np.abs(grad[codes != 0]))
        print(f"layer {name:3s} {type(m).__name__:14s} |∂L/∂α| / Σ|g_i| over I_Δ = {ratio:.1e}")
        assert ratio < 1e-3 if isinstance(m, TernaryConv2d) else ratio > 1e-2
for name in ("ternary (paper, STE)", "ternary, exact gradient"):
    start, end = results[name][3], results[name][4]
    print(name)
    for layer_name in start:
        changed, flips = np.mean(start[layer_name] != end[layer_name]), np.sum(start[layer_name] * end[layer_name] == -1)
        print(f"  layer {layer_name:3s} codes changed {changed:6.1%}, of them sign flips: {flips}")
ste, exact = results["ternary (paper, STE)"], results["ternary, exact gradient"]
assert list(exact[3]) == ["0", "4", "8", "12"]  # three convs and the classifier
for layer_name in exact[3]:
    assert np.sum(exact[3][layer_name] * exact[4][layer_name] == -1) == 0  # exact: no sign flip
    assert np.mean(ste[3][layer_name] != ste[4][layer_name]) > 0.1  # STE: many codes move
    if layer_name != "12":  # the convs
        assert np.array_equal(exact[3][layer_name], exact[4][layer_name])
assert np.mean(exact[3]["12"] != exact[4]["12"]) > 0.1  # the classifier's codes do change
assert exact[0][-1] > ste[0][-1] + 0.3 and exact[1] < ste[1]

# %% [markdown]
# So in this net, where batch norm follows every conv as in the paper's ResNets, the claim
# "backpropagating the exact derivative would never move the latent weights" is nearly true
# for the convs, but because of batch norm, not because the quantizer is flat. For the classifier
# it is false: the exact gradient changed about a fifth of its codes, none by a sign flip.
#
# ## TTQ: one learning rate for scales and weights
#
# TTQ with one learning rate for everything barely learns: its loss stays within 0.05 of
# $\ln 10 \approx 2.30$, the loss of a net that guesses. The gradient of $W_p$ is a *sum*
# over every weight with code +1 in the layer (the counts are printed below). So at the
# learning rate that suits the weights, a scale's very first step is a large fraction of
# the scale itself, and in some layers larger than it (the ratios are printed below). With
# momentum the scales overshoot: they end far from their start, some with the wrong sign.
# Giving the scales a 100× smaller step (TTQ layers ask for it through
# `param_lr_multipliers`, and `model.lr_multipliers()` hands that to the optimiser) lets TTQ
# train, though in these 6 epochs its loss falls less far than the paper's quantizer's.
# The paper's $\alpha$, a statistic recomputed from $W$, needs no such care.

# %%
losses = results["TTQ, one learning rate"][0]
print("TTQ, one learning rate: loss per epoch", np.round(losses, 3), f"(ln 10 = {np.log(10):.3f})")
assert all(abs(value - np.log(10)) < 0.05 for value in losses)
assert results["TTQ, scales step 100× smaller"][0][-1] > results["ternary (paper, STE)"][0][-1]
# the first step of W_p with one learning rate, on a fresh TTQ net and one batch
fresh = ternarize_model(get_model("small", seed=0), variant="ttq")
opt = SGD(fresh.parameters_and_gradients(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
ttq_layers = [(name, m) for name, m in fresh.named_modules() if "scale_pos" in m.params]
before = {name: float(m.params["scale_pos"]) for name, m in ttq_layers}
loss, dlogits = softmax_cross_entropy(fresh.forward(normalize(x_train[:64])), y_train[:64])
fresh.backward(dlogits)
opt.step()
ratios = []
for name, m in ttq_layers:
    count = int(np.sum(m.quantize()[0].codes == 1))
    ratios.append(abs(float(m.params["scale_pos"]) - before[name]) / before[name])
    print(f"  layer {name:3s} {count:5d} weights with code +1; W_p = {before[name]:.3f}, "
          f"its first step = {ratios[-1]:.1f} × W_p")
assert min(ratios) > 0.3 and max(ratios) > 2
print("scales after 6 epochs:")
for run in ("TTQ, one learning rate", "TTQ, scales step 100× smaller"):
    print(run)
    scales = []
    for name, m in results[run][2].named_modules():
        if "scale_pos" in m.params:
            scales += [float(m.params["scale_pos"]), float(m.params["scale_neg"])]
            print(f"  layer {name:3s} W_p = {scales[-2]:7.3f}   W_n = {scales[-1]:7.3f}")
    assert (min(scales) < 0) == (run == "TTQ, one learning rate")  # wrong signs only with one learning rate
    assert (max(np.abs(scales)) > 1) == (run == "TTQ, one learning rate")  # far from their start

# %% [markdown]
# ## Summary
#
# - $W' = \alpha\,T(W)$ is differentiable wherever no $|W_i|$ equals $\Delta$, with Jacobian
#   $TT^\top/n$: the exact gradient is $T_j\,(\partial L/\partial\alpha)/n$. It is zero below the
#   threshold, one shared magnitude above it, and it can only rescale $\alpha$. Where codes
#   change, $W'$ jumps and has no derivative.
# - Trained with that gradient alone, the toy keeps its codes' signs and stalls at the best
#   $\alpha$ for the codes it ends with. In the small net, batch norm makes $\partial L/\partial\alpha \approx 0$
#   for every conv, so their codes never change.
# - The STE (Eq. 4) passes $\partial L/\partial W'$ straight to the latent $W$, cut off at
#   $|W| \ge 1$, with $\alpha$ and $\Delta$ held constant. Each latent weight accumulates its
#   own updates and flips its code when it crosses $\pm\Delta$: that is how a ternary net
#   learns here.
# - TTQ learns its scales; with one learning rate for scales and weights it barely learns
#   here, with a 100× smaller step for the scales it trains. The paper's $\alpha$ is
#   recomputed from $W$ at every step.
#
# ## Exercises
#
# 1. *(coding)* Residual expansion, Eq. (5): $W_{\text{eff}} = \alpha_1T_1 + \alpha_2T_2$ with
#    $\Delta_k = \delta_k\max|W|$, $\delta = (0.05, 0.10)$. Derive the exact $\partial L/\partial W$
#    where it exists, implement it (`ternarize_expansions` gives the $T_k$), and check it by
#    central differences as above. Does the answer change with `threshold_rule="twn"`?
# 2. *(coding)* Build `nn.Conv2d` followed by `nn.BatchNorm2d` (training mode), ternarize
#    the conv, and show numerically that multiplying its latent weight by 3 leaves the output
#    almost unchanged and that $\partial L/\partial\alpha = \sum_i T_i g_i$ is tiny next to
#    $\sum_{i\in I_\Delta}|g_i|$.
# 3. *(coding)* Remove the clip (pass `clip=np.inf` to `straight_through_gradient`).
#    Which entries of the layer check above change?
# 4. *(question)* Show that for $t_{ex}$ expansions that all pass the gradient straight
#    through, $\partial L/\partial W = t_{ex}\cdot\partial L/\partial W_{\text{eff}}\cdot\mathbf 1[|W|<1]$.
# 5. *(question)* A latent weight sits at $W = 0.02$ with $\Delta = 0.075$ and receives a
#    constant gradient $-0.5$ at learning rate $0.1$ (no momentum, no weight
#    decay). After how many steps does its code flip from 0 to +1?
#
# (Solutions are checked in `tests/test_notebook_exercises.py`.)
