# %% [markdown]
# # 1. Convolution and its backward pass
#
# **Learning objectives.** After this notebook you can
# - write a 2-D convolution as a sum over windows and compute its output
#   size for any kernel, stride and padding;
# - derive the three gradients ($\partial L/\partial b$, $\partial L/\partial w$,
#   $\partial L/\partial x$) and say why the input gradient *accumulates* where
#   windows overlap;
# - build the im2col column matrix of a small image and write the forward
#   pass as one matrix product;
# - check a backward pass against central differences with `tqref.gradcheck`
#   and tell a correct relative error from a wrong one;
# - name the three implementations tqref keeps of every operation (the loops,
#   the reference backend, the fast backend), check that they agree and
#   measure what each costs;
# - write your own convolution backward and train a network with it through
#   `tqref.use_backend`.
#
# **Prerequisites.** None from this course: NumPy arrays and broadcasting, and
# the chain rule as backpropagation uses it. **Reading time:** about 30 minutes.
# **Method:** `docs/method.md`, Eq. (3): the convolution here is the layer whose
# weights the paper ternarizes ($y = \operatorname{conv}(x, W') + b$).
#
# **Idea.** A convolution slides each filter over the (zero-padded) image and
# takes a dot product at every position. Its backward pass answers three
# questions: how does the loss change with the input, with the weights and
# with the bias? All three answers are again sums over the same windows. Turning
# every window into a column of a matrix (*im2col*) makes the forward pass a
# single matrix product, a standard route to fast CPU convolutions.
#
# This notebook: the equations, tqref's code for them (read straight from the
# library, so notebook and library never drift), checks on concrete numbers,
# a numeric gradient check, the three implementations side by side, and at
# the end your own backward pass inside a small network that trains with it.

# %%
import inspect

import matplotlib.pyplot as plt
import numpy as np

import tqref
from tqref.functional import conv
from tqref.functional import conv2d_backward, conv2d_backward_naive, conv2d_forward, conv2d_forward_naive
from tqref.gradcheck import check_gradient, numeric_gradient, relative_error
from tqref.kernels import ops as K
from tqref.kernels.im2col import im2col, im2col_naive

rng = np.random.default_rng(0)

# %% [markdown]
# ## The equations
#
# Input $x$ of shape $(N, C, H, W)$, filters $w$ of shape $(F, C, HH, WW)$,
# bias $b$ of shape $(F,)$, stride $s$, zero padding $P$:
#
# $$\text{out}[n,f,i,j] = b_f + \sum_{c}\sum_{p=0}^{HH-1}\sum_{q=0}^{WW-1} x_{\text{pad}}[n,c,\,is+p,\,js+q]\; w[f,c,p,q]$$
#
# with output size $H' = \lfloor (H + 2P - HH)/s \rfloor + 1$. Differentiating
# the loss $L$ through this sum gives the three gradients, each a sum over
# the same windows:
#
# $$\frac{\partial L}{\partial b_f} = \sum_{n,i,j} d\text{out}[n,f,i,j], \qquad
# \frac{\partial L}{\partial w[f,c,p,q]} = \sum_{n,i,j} d\text{out}[n,f,i,j]\, x_{\text{pad}}[n,c,is+p,js+q],$$
#
# $$\frac{\partial L}{\partial x_{\text{pad}}[n,c,is+p,js+q]} \mathrel{+}= \sum_f d\text{out}[n,f,i,j]\, w[f,c,p,q].$$
#
# The last one *adds*: windows overlap when the stride is smaller than the
# kernel, and every window a pixel belongs to sends it some gradient.

# %% [markdown]
# ## Three implementations of the same equations
#
# tqref keeps every operation of a network at three levels, all with the same
# signature, `conv2d_forward(x, w, b, stride, padding) -> (out, cache)` and
# `conv2d_backward(dout, cache) -> (dx, dw, db)`:
#
# | tier | convolution | what it is for |
# |---|---|---|
# | loops | `tqref.functional.conv2d_forward_naive`, `conv2d_backward_naive` | the equations above, one output pixel at a time; too slow to train, the tests hold the other two to it |
# | reference backend | `tqref.functional.conv2d_forward`, `conv2d_backward` | vectorised NumPy on NCHW arrays: what a network runs after `tqref.use_backend("reference")`, short enough to read |
# | fast backend | `tqref.kernels.ops.conv2d_forward`, `conv2d_backward` | Numba kernels, channels-last, both cores: the default, what trains the CIFAR ResNets |
#
# A *backend* (`tqref.backend`) is a table of operations; the layers of
# `tqref.nn` look up `tqref.current_backend().conv2d_forward` at every
# forward pass. The check: the two backends' tables hold exactly these
# functions, and "fast" is the library's default.

# %%
assert tqref.get_backend("reference").conv2d_forward is conv2d_forward
assert tqref.get_backend("reference").conv2d_backward is conv2d_backward
assert tqref.get_backend("fast").conv2d_forward is K.conv2d_forward
assert tqref.get_backend("fast").conv2d_backward is K.conv2d_backward
assert tqref.backend.DEFAULT == "fast"
print("operations of a backend:", len(tqref.backend.OPERATIONS), "| convolution:",
      tqref.backend.OPERATIONS["conv2d_forward"])

# %% [markdown]
# ## Tier 1, the loops: the equations line for line

# %%
print(inspect.getsource(conv2d_forward_naive))

# %%
print(inspect.getsource(conv2d_backward_naive))

# %% [markdown]
# ## Check: a convolution small enough to do by hand
#
# A 3×3 image, one 2×2 filter of ones, no padding, stride 1: each output is
# the sum of a 2×2 block, plus the bias. Then the backward pass with
# $d\text{out} = 1$ everywhere: with filter weights of 1, each pixel's
# gradient counts the windows it belongs to. The four windows overlap, so
# the centre pixel gets four contributions, an edge pixel two and a corner one.

# %%
x = np.arange(9, dtype=np.float64).reshape(1, 1, 3, 3)
w = np.ones((1, 1, 2, 2))
b = np.array([0.5])
out, _ = conv2d_forward_naive(x, w, b, stride=1, padding=0)
print(x[0, 0])
print(out[0, 0])
by_hand = np.array([[0 + 1 + 3 + 4, 1 + 2 + 4 + 5], [3 + 4 + 6 + 7, 4 + 5 + 7 + 8]]) + 0.5
assert np.array_equal(out[0, 0], by_hand)
assert conv.conv_output_size(3, 2, 1, 0) == 2 and conv.conv_output_size(32, 3, 2, 1) == 16

dx, dw, db = conv2d_backward_naive(np.ones_like(out), (x, w, b, 1, 0))
print("dx with dout = 1:")
print(dx[0, 0])
windows_per_pixel = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]])
assert np.array_equal(dx[0, 0], windows_per_pixel)  # the gradient adds up over overlapping windows
assert db[0] == out.size  # ∂L/∂b sums dout over every output pixel

# %% [markdown]
# ## im2col: the convolution as one matrix product
#
# `im2col` copies each window into a column. With the filters flattened to
# the rows of a matrix $W_2$ of shape $(F, C\cdot HH\cdot WW)$, the output is
# $W_2 \cdot \text{cols}$. The picture below is the column matrix of a 4×4
# image of the numbers 1…16, for a 3×3 kernel with padding 1: column $l$ holds
# the 9 pixels under the window of output pixel $l$ (0 where the window
# hangs over the zero padding). The check under the picture reads two columns:
# output pixel 0 (top-left corner, window half in the padding) and output
# pixel 5 (row 1, column 1, window entirely inside the image).

# %%
print(inspect.getsource(im2col_naive))

# %%
image = np.arange(1, 17, dtype=np.float64).reshape(1, 1, 4, 4)
cols = im2col(image, 3, 3, 1, 1)[0]
fig, ax = plt.subplots(figsize=(8, 3))
ax.imshow(cols, cmap="viridis")
for (k, pixel), v in np.ndenumerate(cols):
    ax.text(pixel, k, int(v), ha="center", va="center", color="w", fontsize=7)
ax.set_xlabel("output pixel l = i·W' + j")
ax.set_ylabel("window offset k = p·WW + q")
ax.set_title("im2col of a 4×4 image, 3×3 kernel, padding 1")
plt.show()
print("shape", cols.shape, "| column 0:", cols[:, 0].astype(int), "| column 5:", cols[:, 5].astype(int))
assert cols.shape == (3 * 3, 4 * 4)  # one row per window offset, one column per output pixel
assert np.array_equal(cols[:, 0], [0, 0, 0, 0, 1, 2, 0, 5, 6])  # 5 of the 9 offsets fall in the padding
assert np.array_equal(cols[:, 5], image[0, 0, 0:3, 0:3].ravel())  # the 3×3 block at rows 0–2, columns 0–2

# %% [markdown]
# Check: the matrix product equals the loop convolution, and `im2col` (a
# Numba kernel of `tqref.kernels`) equals its NumPy-slicing twin
# `im2col_naive` exactly.

# %%
x = rng.standard_normal((2, 3, 7, 5))
w = rng.standard_normal((4, 3, 3, 3))
cols = im2col(x, 3, 3, 2, 1)
as_matmul = (w.reshape(4, -1) @ cols).reshape(2, 4, 4, 3)
loops, _ = conv2d_forward_naive(x, w, None, stride=2, padding=1)
print("max |matmul − loops| =", np.abs(as_matmul - loops).max())
assert np.allclose(as_matmul, loops, atol=1e-12)
assert np.array_equal(im2col(x, 3, 3, 2, 1), im2col_naive(x, 3, 3, 2, 1))

# %% [markdown]
# ## Tier 2, the reference backend: im2col from a strided view, one matrix product
#
# The reference `conv2d_forward` builds the same column matrix without a
# loop. NumPy's `sliding_window_view` returns every window of $x_{\text{pad}}$
# as an array of shape $(N, C, H', W', HH, WW)$ that *shares* $x_{\text{pad}}$'s
# memory (a strided view, nothing copied); one reshape then copies it into
# `cols`, with one **row** per output pixel $(n, i, j)$ and one column per
# $(c, p, q)$: the transpose of `im2col`'s layout, so the forward is
# `cols @ w2.T`. The forward keeps `cols` in its cache, and the backward
# needs two kinds of products: one matrix product gives $\partial L/\partial w$,
# and one product per kernel offset $(p, q)$ gives the part of
# $\partial L/\partial x$ that offset read, added into the strided slice of
# $x_{\text{pad}}$ it came from (the overlap-adding col2im). This is the
# code a network runs on the reference backend:

# %%
print(inspect.getsource(conv._windows))
print(inspect.getsource(conv2d_forward))

# %%
print(inspect.getsource(conv2d_backward))

# %% [markdown]
# Check: the window view shares the padded input's memory and reads
# $x_{\text{pad}}[n, c, is+p, js+q]$; the cached `cols` is `im2col`'s matrix,
# transposed to one row per output pixel; and the cache holds what the
# docstring says.

# %%
x_pad = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
windows = conv._windows(x_pad, 3, 3, 2)
assert np.shares_memory(windows, x_pad) and windows.shape == (2, 3, 4, 3, 3, 3)
assert windows[1, 2, 3, 1, 2, 0] == x_pad[1, 2, 3 * 2 + 2, 1 * 2 + 0]
out, cache = conv2d_forward(x, w, None, stride=2, padding=1)
x_shape, cols_ref, w_cached, has_bias, stride, padding = cache
cols_im2col = im2col(x, 3, 3, 2, 1)  # (N, C·HH·WW, H'·W')
print("reference cols:", cols_ref.shape, "| im2col:", cols_im2col.shape)
assert np.array_equal(cols_ref, cols_im2col.transpose(0, 2, 1).reshape(-1, 3 * 3 * 3))
assert x_shape == x.shape and w_cached is w and not has_bias and (stride, padding) == (2, 1)
assert np.allclose(out, loops, atol=1e-12)  # the loops' output of the cell before

# %% [markdown]
# ## The backward pass, checked against the definition of the derivative
#
# `tqref.gradcheck` perturbs each input by ±h and compares
# $(L(x+h) - L(x-h))/2h$ with the analytic gradient, in float64, where
# $L = \sum \text{out} \cdot d\text{out}$ for a random $d\text{out}$. The
# relative error is the largest $|a - n| / (|a| + |n|)$ over all entries
# ($a$ analytic, $n$ numeric); `check_gradient` raises an error above 1e-6.
# Checked here: the reference backward printed above.

# %%
b = rng.standard_normal(4)
out, cache = conv2d_forward(x, w, b, stride=2, padding=1)
dout = rng.standard_normal(out.shape)
dx, dw, db = conv2d_backward(dout, cache)
for name, array, grad in [("x", x, dx), ("w", w, dw), ("b", b, db)]:
    err = check_gradient(lambda: conv2d_forward(x, w, b, 2, 1)[0], array, grad, dout, name=name)
    print(f"relative error of d{name}: {err:.1e}")
    assert err < 1e-6

# %% [markdown]
# A picture of the same check: every analytic entry of $\partial L/\partial w$
# against its numeric estimate lies on the diagonal. For contrast, a classic
# mistake: the weight gradient with the kernel flipped in space (mixing up
# convolution and correlation). Its points leave the diagonal, and its relative
# error is many orders of magnitude above the correct one.

# %%
numeric_dw = numeric_gradient(lambda: conv2d_forward(x, w, b, 2, 1)[0], w, dout)
fig, ax = plt.subplots(figsize=(4, 4))
flipped_dw = dw[:, :, ::-1, ::-1]  # the mistake: the kernel turned by 180°
err_right, err_flipped = relative_error(dw, numeric_dw), relative_error(flipped_dw, numeric_dw)
ax.scatter(numeric_dw.ravel(), flipped_dw.ravel(), s=8, c="tab:red", alpha=0.5,
           label=f"kernel flipped (wrong): {err_flipped:.1e}")
ax.scatter(numeric_dw.ravel(), dw.ravel(), s=8, label=f"conv2d_backward: {err_right:.1e}")
lim = np.abs(dw).max() * 1.1
ax.plot([-lim, lim], [-lim, lim], "k--", lw=0.8)
ax.set_xlabel("numeric ∂L/∂w")
ax.set_ylabel("analytic ∂L/∂w")
ax.set_title("relative error of ∂L/∂w")
ax.legend(fontsize=8)
plt.show()
print(f"relative error: correct {err_right:.1e}, kernel flipped {err_flipped:.1e}")
assert err_right < 1e-6 and err_flipped > 1e-2

# %% [markdown]
# ## Tier 3, the fast backend, and all three side by side
#
# The fast pair computes the same sums in a faster order: activations
# stored channels-last, each image's columns built by a Numba kernel and
# multiplied by BLAS called from inside Numba, the images spread over the
# cores. A 3×3, stride-1 convolution with at least 16 input and 16 output
# channels takes Winograd's F(2×2, 3×3) instead: per 2×2 block of outputs and
# per channel pair it needs 4·4 = 16 multiplications where the direct sum
# needs 4·9 = 36, i.e. 2.25× fewer (`tqref/kernels/conv_nhwc.py` and
# `winograd.py` explain how and why). Its source is long and tuned; read the
# two tiers above for the mathematics. `tests/test_backends.py` holds the
# three tiers equal over many shapes. Here on two layers in float64: the
# stride-2 layer with bias from above, and a 16-channel 3×3 layer (where the
# fast side takes the Winograd path). Each entry is compared with the loops',
# the error taken relative to the largest entry of the loops' array.

# %%
from tqref.kernels.conv_nhwc import WINOGRAD_MIN_CHANNELS

TIERS = {"loops": (conv2d_forward_naive, conv2d_backward_naive),
         "reference": (conv2d_forward, conv2d_backward),
         "fast": (K.conv2d_forward, K.conv2d_backward)}


def forward_backward(tier, x, w, b, stride, padding, dout):
    """One forward and one backward pass of ``tier``: {out, dx, dw, db}."""
    fwd, bwd = TIERS[tier]
    out, cache = fwd(x, w, b, stride, padding)
    dx, dw, db = bwd(dout, cache)
    return {"out": out, "dx": dx, "dw": dw, "db": db}


x16 = rng.standard_normal((8, 16, 16, 16))
w16 = rng.standard_normal((16, 16, 3, 3))
b16 = rng.standard_normal(16)
assert min(x16.shape[1], w16.shape[0]) >= WINOGRAD_MIN_CHANNELS  # this layer takes the Winograd path
layers = {"2×3×7×5, 4 filters, stride 2": (x, w, b, 2, 1),
          "8×16×16×16, 16 filters, stride 1": (x16, w16, b16, 1, 1)}
for name, (x_l, w_l, b_l, s_l, p_l) in layers.items():
    dout = rng.standard_normal(conv2d_forward(x_l, w_l, b_l, s_l, p_l)[0].shape)
    results = {tier: forward_backward(tier, x_l, w_l, b_l, s_l, p_l, dout) for tier in TIERS}
    for tier in ("reference", "fast"):
        errors = {key: np.abs(results[tier][key] - loops_value).max() / np.abs(loops_value).max()
                  for key, loops_value in results["loops"].items()}
        print(f"{name:34s} {tier:9s} vs loops:", ", ".join(f"{k} {e:.0e}" for k, e in errors.items()))
        assert max(errors.values()) < 1e-13  # float64 rounding, summed in another order
# %% [markdown]
# What the three cost: one forward and one backward pass of the 16-channel
# layer in float32 (the dtype training uses). For the two backends the best
# of as many runs as fit in half a second, after a first call (Numba compiles
# a kernel on its first use); for the loops a single run. The times are this run's, on this
# machine, and move with its load; what is asserted is only the ordering that
# no machine changes: the loops are slower than both backends.

# %%
import time

x32, w32 = x16.astype(np.float32), w16.astype(np.float32)
dout32 = rng.standard_normal((8, 16, 16, 16)).astype(np.float32)  # the output's shape


def seconds(tier, budget):
    """Best time of one forward + backward pass of ``tier`` on the float32 layer,
    over as many runs as fit in ``budget`` seconds (at least one)."""
    fwd, bwd = TIERS[tier]
    if budget > 0:
        bwd(dout32, fwd(x32, w32, None, 1, 1)[1])  # the first call compiles the kernels
    best, spent = np.inf, 0.0
    while spent <= budget:
        start = time.perf_counter()
        out, cache = fwd(x32, w32, None, 1, 1)
        bwd(dout32, cache)
        best = min(best, time.perf_counter() - start)
        spent += time.perf_counter() - start
    return best


timings = {"loops": seconds("loops", 0), "reference": seconds("reference", 0.5), "fast": seconds("fast", 0.5)}
fig, ax = plt.subplots(figsize=(5, 2.2))
ax.barh(list(timings)[::-1], [t * 1e3 for t in list(timings.values())[::-1]], color=["C2", "C0", "C7"])
ax.set_xscale("log")
ax.set_xlabel("forward + backward, ms (log scale)")
ax.set_title("8×16×16×16 input, 16 filters 3×3, float32")
plt.show()
print(f"loops {timings['loops']:.2f} s | reference {timings['reference'] * 1e3:.1f} ms "
      f"({timings['loops'] / timings['reference']:.0f}× faster than the loops) | fast "
      f"{timings['fast'] * 1e3:.2f} ms ({timings['loops'] / timings['fast']:.0f}× faster than the loops, "
      f"reference ÷ fast = {timings['reference'] / timings['fast']:.1f})")
assert timings["loops"] > timings["reference"] and timings["loops"] > timings["fast"]

# %% [markdown]
# ## Your own backward inside a real network
#
# Because the layers look each operation up in the current backend, you can
# replace one operation with your own and a whole network runs with it,
# everything else unchanged:
#
#     with tqref.use_backend("reference", conv2d_backward=my_conv2d_backward) as B:
#         ...   # every convolution's backward pass now calls my_conv2d_backward
#
# Your function receives the cache of the reference `conv2d_forward`,
# `(x.shape, cols, w, has_bias, stride, padding)` (its docstring above), so
# it replaces the reference backend's backward. Here is one written another
# way than the library's. First the gradient of the whole column matrix:
# row $(n, i, j)$ of `cols` met every filter once, so
#
# $$\frac{\partial L}{\partial\,\text{cols}[(n,i,j), (c,p,q)]} = \sum_f d\text{out}[n,f,i,j]\; w[f,c,p,q],
# \qquad \text{i.e.}\quad d\text{cols} = d\text{out}_{\text{rows}}\, W_2 ,$$
#
# each row the gradient of one window. Then col2im as the textbook writes it,
# one output pixel at a time: every window adds its gradient back onto the
# pixels it was read from. $\partial L/\partial w = d\text{out}_{\text{rows}}^\top\,\text{cols}$
# and $\partial L/\partial b$ are as before.

# %%
def my_conv2d_backward(dout, cache):
    """dout: (N, F, H', W') -> dx (N, C, H, W), dw (F, C, HH, WW), db (F,) or None,
    from the cache of the reference conv2d_forward."""
    (N, C, H, W), cols, w, has_bias, s, pad = cache
    F, _, HH, WW = w.shape
    H_out, W_out = dout.shape[2:]
    dout_rows = dout.transpose(0, 2, 3, 1).reshape(-1, F)       # row (n, i, j), as in cols
    dw = (dout_rows.T @ cols).reshape(w.shape)
    dcols = (dout_rows @ w.reshape(F, -1)).reshape(N, H_out, W_out, C, HH, WW)  # ∂L/∂cols
    dx_pad = np.zeros((N, C, H + 2 * pad, W + 2 * pad), dtype=w.dtype)
    for i in range(H_out):  # col2im: each window's gradient goes back where the window was read
        for j in range(W_out):
            dx_pad[:, :, i * s : i * s + HH, j * s : j * s + WW] += dcols[:, i, j]
    db = dout.sum(axis=(0, 2, 3)) if has_bias else None
    return dx_pad[:, :, pad : pad + H, pad : pad + W], dw, db


# %% [markdown]
# Check it before a network uses it: against central differences (as above)
# and against the library's reference backward, on the stride-2 layer with
# bias and on a stride-1 layer without bias (the small network's
# convolutions have none, checked below).

# %%
x_s1, w_s1 = rng.standard_normal((2, 3, 6, 6)), rng.standard_normal((5, 3, 3, 3))
for name, (x_l, w_l, b_l, s_l, p_l) in {"stride 2, bias": (x, w, b, 2, 1),
                                        "stride 1, no bias": (x_s1, w_s1, None, 1, 1)}.items():
    out, cache = conv2d_forward(x_l, w_l, b_l, s_l, p_l)
    dout = rng.standard_normal(out.shape)
    mine, library = my_conv2d_backward(dout, cache), conv2d_backward(dout, cache)
    checked = [("x", x_l, mine[0]), ("w", w_l, mine[1])] + ([("b", b_l, mine[2])] if b_l is not None else [])
    numeric = {n: check_gradient(lambda: conv2d_forward(x_l, w_l, b_l, s_l, p_l)[0], a, g, dout, name=n)
               for n, a, g in checked}
    gap = max(np.abs(m - lib).max() for m, lib in zip(mine, library) if lib is not None)
    print(f"{name}: relative error vs numeric", ", ".join(f"d{n} {e:.0e}" for n, e in numeric.items()),
          f"| max |mine − library| = {gap:.0e}")
    assert max(numeric.values()) < 1e-6 and gap < 1e-12
    assert (mine[2] is None) == (b_l is None)

# %% [markdown]
# Now inside a network: `tqref.models.small_cnn` (three 3×3 convolutions
# without bias, each followed by batch norm and ReLU, two max-pooling
# layers, a global average and a linear layer; its layers are printed), in
# float64, trained for 10 steps of SGD with momentum on one batch of 32
# synthetic 16×16 images. Each image is noise around one of ten colours, and
# the colour is the class, so the loss should fall within a few steps.
# The same 10 steps run twice from the same initial weights: once with the
# student's backward (wrapped so that it counts its calls), once with the
# library's. The check: (a) the student's function ran for every convolution
# of every step, (b) the two runs' losses agree to 1e-12 relative (the first
# loss comes before any backward pass, every later one depends on all
# earlier backward passes), (c) the loss falls, here at least by half.

# %%
from tqref.models import small_cnn
from tqref.nn import Conv2d
from tqref.optim import SGD

colours = rng.uniform(-1, 1, (10, 3))
labels = rng.integers(0, 10, 32)
images = colours[labels][:, :, None, None] + rng.normal(0, 0.5, (32, 3, 16, 16))
STEPS = 10


def train(**replaced):
    """STEPS SGD steps of a fresh small_cnn on (images, labels), on the reference
    backend with the operations in ``replaced`` swapped in: the losses, the model
    and the backend used."""
    losses = []
    with tqref.use_backend("reference", **replaced) as B:
        model = small_cnn(dtype=np.float64, seed=0)
        opt = SGD(model.parameters_and_gradients(), lr=0.05, momentum=0.9)
        for _ in range(STEPS):
            loss, dlogits = B.softmax_cross_entropy(model.forward(images), labels)
            model.backward(dlogits)
            opt.step()
            losses.append(loss)
    return np.array(losses), model, B


calls = []


def counting_wrapper(dout, cache):
    calls.append(dout.shape)
    return my_conv2d_backward(dout, cache)


losses_mine, model, B = train(conv2d_backward=counting_wrapper)
losses_library, _, _ = train()
convs = [m for _, m in model.named_modules() if isinstance(m, Conv2d)]
n_convs = len(convs)
print("small_cnn:", " → ".join(type(m).__name__ for name, m in model.named_modules() if name))  # '' is the net
print(f"backend {B.name!r}: {len(calls)} calls of the student's backward = {STEPS} steps × {n_convs} convolutions")
print("losses, student's backward:", np.round(losses_mine, 4))
print("losses, library's backward:", np.round(losses_library, 4))
rel_gap = np.abs(losses_mine - losses_library).max() / losses_library.max()
print(f"largest difference, relative: {rel_gap:.0e}")
assert B.conv2d_forward is conv2d_forward and B.conv2d_backward is counting_wrapper
assert tqref.current_backend() is not B                             # the with block has ended
assert n_convs == 3 and not any("bias" in m.params for m in convs)
assert len(calls) == STEPS * n_convs                                # (a)
assert rel_gap < 1e-12                                              # (b)
assert losses_mine[-1] < 0.5 * losses_mine[0]                       # (c)
fig, ax = plt.subplots(figsize=(5, 3))
ax.plot(range(1, STEPS + 1), losses_library, "o-", color="lightgray", lw=4, label="library's backward")
ax.plot(range(1, STEPS + 1), losses_mine, "C3.--", label="my_conv2d_backward")
ax.set_xlabel("step")
ax.set_ylabel("cross-entropy loss")
ax.legend()
plt.show()

# %% [markdown]
# ## Summary
#
# - A convolution is a sum over windows; each of its three gradients is a sum
#   over the same windows, and $\partial L/\partial x$ accumulates where windows
#   overlap (the centre pixel of the 3×3 example received four contributions).
# - im2col rewrites the forward pass as one matrix product; exercise 1 asks you
#   to show that its adjoint, col2im, carries the gradient back to the input.
# - Central differences in float64 agree with the hand-written backward to a
#   relative error below 1e-6 (the values are printed above); the flipped-kernel
#   mistake gives a relative error above 1e-2.
# - Three tiers compute the same convolution: the loops (the equations), the
#   reference backend (`tqref.functional`: a strided view, one matrix product
#   forward, col2im by kernel offset backward) and the fast backend
#   (`tqref.kernels.ops`: Numba, channels-last, Winograd). In float64 they
#   agree to rounding (below 1e-13 relative); the loops are the slowest, and
#   the printed timings show by how much on this machine.
# - `tqref.use_backend("reference", conv2d_backward=...)` runs a network with
#   your own operation: the small network called the student's backward for
#   each of its 3 convolutions at each of 10 steps, and trained to the same
#   losses as with the library's.
#
# ## Exercises
#
# 1. Show that `col2im` is the adjoint of `im2col`: for any $x$ and any
#    column matrix $c$ of the right shape, $\langle \text{im2col}(x), c\rangle = \langle x, \text{col2im}(c)\rangle$.
#    Why does that make $dx = \text{col2im}(W_2^\top\, d\text{out})$ correct?
# 2. For an input of size 8, kernel 3, stride 2 and padding 1, what is the
#    output size? Which input pixels never receive any gradient when the
#    padding is 0 instead?
# 3. Write $\partial L/\partial w$ as a matrix product of $d\text{out}$ and
#    `im2col`'s column matrix (layout $(N, C\cdot HH\cdot WW, H'\cdot W')$, not the
#    reference's rows), and check it against `conv2d_backward`.
# 4. Replace `conv2d_forward` too: write `my_conv2d_forward(x, w, b, stride, padding)`
#    that returns the output and the cache `(x.shape, cols, w, has_bias, stride, padding)`
#    the reference forward returns (for instance with `im2col` and a transpose),
#    and train with it: `train(conv2d_forward=my_conv2d_forward, conv2d_backward=counting_wrapper)`
#    (which passes both to `tqref.use_backend("reference", ...)`), after
#    `calls.clear()`. Check it as the last section does: `len(calls) == STEPS * 3`,
#    and the losses equal `losses_library` to 1e-12 relative.
#
# (Solutions to exercises 1–3 are checked in `tests/test_notebook_exercises.py`;
# exercise 4 checks itself, as the last section checks `my_conv2d_backward`.)
