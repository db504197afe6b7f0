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
#   and tell a correct relative error from a wrong one.
#
# **Prerequisites.** None from this course: NumPy arrays and broadcasting, and
# the chain rule as backpropagation uses it. **Reading time:** about 20 minutes.
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
# a numeric gradient check, and the naive and fast versions side by side.

# %%
import inspect

import matplotlib.pyplot as plt
import numpy as np

from tqref.functional import conv
from tqref.functional import conv2d_backward, conv2d_backward_naive, conv2d_forward, conv2d_forward_naive
from tqref.gradcheck import check_gradient, numeric_gradient, relative_error
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
# ## The code: the naive version, loop for loop

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
# Check: the matrix product equals the loop convolution, and the fast
# (Numba) `im2col` equals its naive twin exactly.

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
# ## The backward pass, checked against the definition of the derivative
#
# `tqref.gradcheck` perturbs each input by ±h and compares
# $(L(x+h) - L(x-h))/2h$ with the analytic gradient, in float64, where
# $L = \sum \text{out} \cdot d\text{out}$ for a random $d\text{out}$. The
# relative error is the largest $|a - n| / (|a| + |n|)$ over all entries
# ($a$ analytic, $n$ numeric); `check_gradient` raises an error above 1e-6.

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
# ## Naive and fast: same signature, same numbers
#
# The fast pair computes the same sums in a faster order: activations
# stored channels-last, each image's columns built by a Numba kernel and
# multiplied by BLAS called from inside Numba. A 3×3, stride-1 convolution
# with at least 16 input and 16 output channels takes Winograd's F(2×2, 3×3)
# instead: per 2×2 block of outputs and per channel pair it needs 4·4 = 16
# multiplications where the direct sum needs 4·9 = 36, i.e. 2.25× fewer
# (`tqref/kernels/conv_nhwc.py` and `winograd.py` explain how and why).
# `tests/test_conv.py` holds the fast pair equal to the loops over many
# shapes. Here once more, on a 16-channel 3×3 layer (so the fast side is the
# Winograd path), and a timing.

# %%
import time

from tqref.kernels.conv_nhwc import WINOGRAD_MIN_CHANNELS

x32 = rng.standard_normal((8, 16, 16, 16)).astype(np.float32)
w32 = rng.standard_normal((16, 16, 3, 3)).astype(np.float32)
timings = {}
for label, fwd, bwd in [("naive", conv2d_forward_naive, conv2d_backward_naive),
                        ("fast", conv2d_forward, conv2d_backward)]:
    fwd(x32, w32, None, 1, 1)  # warm-up (Numba compiles on first use)
    start = time.perf_counter()
    out, cache = fwd(x32, w32, None, 1, 1)
    grads = bwd(np.ones_like(out), cache)
    timings[label] = (time.perf_counter() - start, out, grads)
(t_naive, out_n, g_n), (t_fast, out_f, g_f) = timings["naive"], timings["fast"]
assert min(x32.shape[1], w32.shape[0]) >= WINOGRAD_MIN_CHANNELS  # this layer takes the Winograd path
assert np.allclose(out_n, out_f, rtol=1e-4, atol=1e-4)
assert all(np.allclose(a, b_, rtol=1e-4, atol=1e-3) for a, b_ in zip(g_n[:2], g_f[:2]))
print(f"forward + backward, 8×16×16×16 input, 16 filters 3×3: naive {t_naive:.2f} s, fast {t_fast * 1e3:.1f} ms "
      f"({t_naive / t_fast:.0f}× faster)")
assert t_fast < t_naive

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
#
# ## Exercises
#
# 1. Show that `col2im` is the adjoint of `im2col`: for any $x$ and any
#    column matrix $c$ of the right shape, $\langle \text{im2col}(x), c\rangle = \langle x, \text{col2im}(c)\rangle$.
#    Why does that make $dx = \text{col2im}(W_2^\top\, d\text{out})$ correct?
# 2. For an input of size 8, kernel 3, stride 2 and padding 1, what is the
#    output size? Which input pixels never receive any gradient when the
#    padding is 0 instead?
# 3. Write $\partial L/\partial w$ as a matrix product of $d\text{out}$ and the
#    column matrix, and check it against `conv2d_backward`.
#
# (Solutions are checked in `tests/test_notebook_exercises.py`.)
