"""Layers with parameters, each a thin shell around a pair of stateless
operations: ``forward`` validates the input, calls the current backend's
``op_forward`` and keeps the cache; ``backward`` pops the cache, calls
``op_backward`` of the backend that made it and writes the parameter
gradients.  A layer does not know which backend runs (``tqref.backend``:
the readable NumPy of ``tqref.functional``, or the fast kernels).

Shapes follow CS231n: x (N, C, H, W), conv weight w (F, C, HH, WW),
linear weight w (F, D) (PyTorch's layout).
"""

import numpy as np

from tqref.backend import current_backend
from tqref.nn.init import as_generator, he_normal_fan_in, he_normal_fan_out
from tqref.nn.module import Module
from tqref.validation import check_nonnegative_int, check_positive_int


def _check_dtype(dtype, who):
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"{who}: dtype: expected float32 or float64, got {dtype}")
    return dtype


class WeightedLayer(Module):
    """What Conv2d and Linear share: a ``weight`` (and optional ``bias``)
    used by one functional pair.  Two hooks let the ternary layers of
    ``tqref.ternary`` change the weight without touching anything else:

        weight_for_forward()       the weight the operation uses (here: the parameter)
        accept_weight_gradient(dw) store ∂L/∂(that weight)        (here: as is)
    """

    input_ndim = None

    def weight_for_forward(self):
        return self.params["weight"]

    def accept_weight_gradient(self, dw):
        self.grads["weight"][...] = dw

    def _op_forward(self, B, x, w, b):
        raise NotImplementedError

    def _op_backward(self, B, dout, cache):
        raise NotImplementedError

    def forward(self, x):
        B = current_backend()
        self.check_input(x, ndim=self.input_ndim, channels=self.params["weight"].shape[1])
        out, cache = self._op_forward(B, x, self.weight_for_forward(), self.params.get("bias"))
        self._keep(B, cache)
        return out

    def backward(self, dout):
        B, cache = self._pop_cache()
        dx, dw, db = self._op_backward(B, dout, cache)
        self.accept_weight_gradient(dw)
        if db is not None:
            self.grads["bias"][...] = db
        return dx


class Conv2d(WeightedLayer):
    """2-D convolution:  out[n, f] = Σ_c w[f, c] ⋆ x_pad[n, c] + b[f].

    x: (N, C, H, W) -> out: (N, F, H', W'), H' = (H + 2·padding − HH)//stride + 1.
    Parameters: ``weight`` (F, C, HH, WW), He fan-out init; ``bias`` (F,) if bias=True.
    """

    input_ndim = 4

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True,
                 dtype=np.float32, rng=None):
        super().__init__()
        self.in_channels = check_positive_int(in_channels, "Conv2d: in_channels")
        self.out_channels = check_positive_int(out_channels, "Conv2d: out_channels")
        self.kernel_size = check_positive_int(kernel_size, "Conv2d: kernel_size")
        self.stride = check_positive_int(stride, "Conv2d: stride")
        self.padding = check_nonnegative_int(padding, "Conv2d: padding")
        dtype = _check_dtype(dtype, "Conv2d")
        shape = (out_channels, in_channels, kernel_size, kernel_size)
        self.add_param("weight", he_normal_fan_out(as_generator(rng), shape, dtype))
        if bias:
            self.add_param("bias", np.zeros(out_channels, dtype=dtype))

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, bias={'bias' in self.params}")

    def _op_forward(self, B, x, w, b):
        return B.conv2d_forward(x, w, b, self.stride, self.padding)

    def _op_backward(self, B, dout, cache):
        return B.conv2d_backward(dout, cache)


class Linear(WeightedLayer):
    """Fully connected layer:  out = x · wᵀ + b.

    x: (N, D) -> out: (N, F).  ``weight`` (F, D) He fan-in init, ``bias`` (F,) zeros.
    """

    input_ndim = 2

    def __init__(self, in_features, out_features, bias=True, dtype=np.float32, rng=None):
        super().__init__()
        self.in_features = check_positive_int(in_features, "Linear: in_features")
        self.out_features = check_positive_int(out_features, "Linear: out_features")
        dtype = _check_dtype(dtype, "Linear")
        shape = (out_features, in_features)
        self.add_param("weight", he_normal_fan_in(as_generator(rng), shape, dtype))
        if bias:
            self.add_param("bias", np.zeros(out_features, dtype=dtype))

    def extra_repr(self):
        return f"{self.in_features}, {self.out_features}, bias={'bias' in self.params}"

    def _op_forward(self, B, x, w, b):
        return B.linear_forward(x, w, b)

    def _op_backward(self, B, dout, cache):
        return B.linear_backward(dout, cache)


class BatchNorm2d(Module):
    """Batch normalisation over (N, H, W) for each channel:

        y = γ · (x − μ) / √(σ² + ε) + β

    Training: μ, σ² of the batch; running averages updated with ``momentum``
    (PyTorch's convention, unbiased running variance).  Evaluation: the
    running averages.  Parameters ``weight`` = γ (ones), ``bias`` = β (zeros);
    buffers ``running_mean`` (zeros), ``running_var`` (ones).  x: (N, C, H, W).
    """

    def __init__(self, num_features, momentum=0.1, eps=1e-5, dtype=np.float32):
        super().__init__()
        self.num_features = check_positive_int(num_features, "BatchNorm2d: num_features")
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"BatchNorm2d: momentum: expected a number in [0, 1], got {momentum!r}")
        if not eps > 0:
            raise ValueError(f"BatchNorm2d: eps: expected a positive number, got {eps!r}")
        self.momentum, self.eps = float(momentum), float(eps)
        dtype = _check_dtype(dtype, "BatchNorm2d")
        self.add_param("weight", np.ones(num_features, dtype=dtype))
        self.add_param("bias", np.zeros(num_features, dtype=dtype))
        self.buffers["running_mean"] = np.zeros(num_features, dtype=dtype)
        self.buffers["running_var"] = np.ones(num_features, dtype=dtype)

    def extra_repr(self):
        return f"{self.num_features}, momentum={self.momentum}, eps={self.eps}"

    def forward(self, x):
        B = current_backend()
        self.check_input(x, ndim=4, channels=self.num_features)
        out, cache = B.batchnorm_forward(
            x, self.params["weight"], self.params["bias"],
            self.buffers["running_mean"], self.buffers["running_var"],
            self.training, self.momentum, self.eps)
        self._keep(B, cache)
        return out

    def backward(self, dout):
        B, cache = self._pop_cache()
        dx, dgamma, dbeta = B.batchnorm_backward(dout, cache)
        self.grads["weight"][...] = dgamma
        self.grads["bias"][...] = dbeta
        return dx

    # The fused pair a residual block uses: one pass instead of three
    # (batch norm, add, ReLU), and neither BN(x) nor the sum stored.
    def forward_relu(self, x, residual=None):
        """ReLU(BN(x) + residual) (residual None: ReLU(BN(x))), the same
        numbers as this layer's forward followed by an add and a ReLU."""
        B = current_backend()
        self.check_input(x, ndim=4, channels=self.num_features)
        out, cache = B.batchnorm_relu_forward(
            x, self.params["weight"], self.params["bias"],
            self.buffers["running_mean"], self.buffers["running_var"],
            self.training, self.momentum, self.eps, residual=residual)
        self._keep(B, cache)
        return out

    def backward_relu(self, dout):
        """Backward of ``forward_relu``: returns (dx, dsum), dsum = dout·1[out > 0]
        being the gradient that reaches the residual."""
        B, cache = self._pop_cache()
        dx, dgamma, dbeta, dsum = B.batchnorm_relu_backward(dout, cache)
        self.grads["weight"][...] = dgamma
        self.grads["bias"][...] = dbeta
        return dx, dsum


class _Stateless(Module):
    """A layer without parameters around one pair of operations, named by
    ``op`` ("relu" runs the backend's relu_forward and relu_backward).  Its
    input check uses ``ndim``; the dtype must be float, like every layer's."""

    ndim = 4
    op = None

    def forward(self, x):
        B = current_backend()
        self.check_input(x, ndim=self.ndim)
        out, cache = getattr(B, f"{self.op}_forward")(x)
        self._keep(B, cache)
        return out

    def backward(self, dout):
        B, cache = self._pop_cache()
        return getattr(B, f"{self.op}_backward")(dout, cache)


class ReLU(_Stateless):
    """y = max(x, 0), any shape."""

    ndim = None
    op = "relu"


class MaxPool2x2(_Stateless):
    """2×2 max pooling, stride 2: (N, C, H, W) -> (N, C, H//2, W//2)."""

    op = "max_pool2x2"


class GlobalAvgPool2d(_Stateless):
    """Mean over H and W: (N, C, H, W) -> (N, C)."""

    op = "global_avg_pool"


class OptionAShortcut(_Stateless):
    """The CIFAR ResNet "option A" shortcut: x[:, :, ::2, ::2] with the
    channels zero-padded from ``in_channels`` to ``out_channels`` (no parameters).
    (N, C, H, W) -> (N, out_channels, ⌈H/2⌉, ⌈W/2⌉)."""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels

    def extra_repr(self):
        return f"{self.in_channels} -> {self.out_channels}"

    def forward(self, x):
        B = current_backend()
        self.check_input(x, ndim=4, channels=self.in_channels)
        out, cache = B.option_a_shortcut_forward(x, self.out_channels)
        self._keep(B, cache)
        return out

    def backward(self, dout):
        B, cache = self._pop_cache()
        return B.option_a_shortcut_backward(dout, cache)


class Sequential(Module):
    """Layers applied in order; backward runs them in reverse.
    Children are named "0", "1", ... as in PyTorch."""

    def __init__(self, *layers):
        super().__init__()
        self.layers = list(layers)
        for i, layer in enumerate(self.layers):
            if not isinstance(layer, Module):
                raise TypeError(f"Sequential: layer {i}: expected a tqref Module, got {type(layer).__name__}")
            self.register_child(str(i), layer)

    def replace_child(self, key, module):
        old = super().replace_child(key, module)
        self.layers[int(key)] = module
        return old

    def __len__(self):
        return len(self.layers)

    def __getitem__(self, i):
        return self.layers[i]

    def forward(self, x):
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def backward(self, dout):
        for layer in reversed(self.layers):
            dout = layer.backward(dout)
        return dout
