"""Stateless operations: ``op_forward(...) -> (out, cache)`` and
``op_backward(dout, cache) -> grads``, only math (no threads, no layouts).

Each comes twice with one signature: ``op_*_naive``, loops that read as the
equation (read it first), and ``op_*``, the vectorised NumPy that the
reference backend runs (``tqref.backend``).  The fast backend's versions of
the same operations live in ``tqref.kernels.ops``; tests hold all three
equal (tests/test_backends.py)."""

from tqref.functional.activations import relu_backward, relu_backward_naive, relu_forward, relu_forward_naive
from tqref.functional.batchnorm import (
    batchnorm_backward,
    batchnorm_backward_naive,
    batchnorm_forward,
    batchnorm_forward_naive,
    batchnorm_relu_backward,
    batchnorm_relu_backward_naive,
    batchnorm_relu_forward,
    batchnorm_relu_forward_naive,
)
from tqref.functional.conv import (
    conv2d_backward,
    conv2d_backward_naive,
    conv2d_forward,
    conv2d_forward_naive,
    conv_output_size,
)
from tqref.functional.linear import linear_backward, linear_backward_naive, linear_forward, linear_forward_naive
from tqref.functional.loss import softmax_cross_entropy, softmax_cross_entropy_naive
from tqref.functional.pooling import (
    global_avg_pool_backward,
    global_avg_pool_backward_naive,
    global_avg_pool_forward,
    global_avg_pool_forward_naive,
    max_pool2x2_backward,
    max_pool2x2_backward_naive,
    max_pool2x2_forward,
    max_pool2x2_forward_naive,
)
from tqref.functional.shortcut import (
    add_backward,
    add_backward_naive,
    add_forward,
    add_forward_naive,
    option_a_shortcut_backward,
    option_a_shortcut_backward_naive,
    option_a_shortcut_forward,
    option_a_shortcut_forward_naive,
)

__all__ = [
    "add_backward", "add_backward_naive", "add_forward", "add_forward_naive", "batchnorm_backward",
    "batchnorm_backward_naive", "batchnorm_forward", "batchnorm_forward_naive",
    "batchnorm_relu_backward", "batchnorm_relu_backward_naive", "batchnorm_relu_forward",
    "batchnorm_relu_forward_naive", "conv2d_backward", "conv2d_backward_naive", "conv2d_forward",
    "conv2d_forward_naive", "conv_output_size", "global_avg_pool_backward",
    "global_avg_pool_backward_naive", "global_avg_pool_forward", "global_avg_pool_forward_naive",
    "linear_backward", "linear_backward_naive", "linear_forward", "linear_forward_naive",
    "max_pool2x2_backward", "max_pool2x2_backward_naive", "max_pool2x2_forward",
    "max_pool2x2_forward_naive", "option_a_shortcut_backward", "option_a_shortcut_backward_naive",
    "option_a_shortcut_forward", "option_a_shortcut_forward_naive", "relu_backward",
    "relu_backward_naive", "relu_forward", "relu_forward_naive", "softmax_cross_entropy",
    "softmax_cross_entropy_naive",
]
