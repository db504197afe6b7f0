"""Task 1a: the convolution with loops, conv2d_forward_naive and
conv2d_backward_naive in tqref/functional/conv.py.

Checked against the convolution computed another way (through the FFT,
``tqref.course.checks.conv_reference``) and against numeric gradients of
it, on convolutions of random sizes, strides and paddings.
"""

import numpy as np
import pytest

from tqref.course import checks
from tqref.functional.conv import conv2d_backward_naive, conv2d_forward_naive

pytestmark = pytest.mark.task1a
NAMES = ("conv2d_forward_naive", "conv2d_backward_naive")


def test_forward_on_random_convolutions(rng):
    for case in checks.random_conv_cases(rng, 4):
        checks.check_conv_forward(NAMES[0], conv2d_forward_naive, case)


def test_forward_edge_cases(rng):
    cases = [
        checks.conv_case(rng, 1, 1, 3, 3, 1, 3, 3, 1, 0, True),     # one window: the whole image
        checks.conv_case(rng, 2, 3, 5, 4, 2, 1, 1, 1, 0, True),     # 1×1: a matrix product per pixel
        checks.conv_case(rng, 1, 2, 4, 5, 3, 3, 2, 1, 3, False),    # padding wider than the kernel
        checks.conv_case(rng, 2, 2, 8, 7, 2, 2, 3, 3, 0, True),     # stride > kernel: pixels skipped
        checks.conv_case(rng, 1, 2, 6, 6, 2, 3, 3, 2, 1, True, np.float32),
    ]
    for case in cases:
        checks.check_conv_forward(NAMES[0], conv2d_forward_naive, case)


def test_backward_on_random_convolutions(rng):
    for case in checks.random_conv_cases(rng, 3):
        checks.check_conv_backward(NAMES, conv2d_forward_naive, conv2d_backward_naive, case)


def test_backward_edge_cases(rng):
    cases = [
        checks.conv_case(rng, 1, 2, 4, 5, 3, 3, 2, 1, 3, False),    # padding wider than the kernel
        checks.conv_case(rng, 2, 2, 8, 7, 2, 2, 3, 3, 0, True),     # stride > kernel: pixels without gradient
        checks.conv_case(rng, 2, 3, 5, 4, 2, 1, 1, 1, 0, True),     # 1×1
        checks.conv_case(rng, 1, 2, 6, 6, 2, 3, 3, 2, 1, True, np.float32),
    ]
    for case in cases:
        checks.check_conv_backward(NAMES, conv2d_forward_naive, conv2d_backward_naive, case)


def test_the_gradients_are_the_adjoint_of_the_forward(rng):
    """⟨conv(x, w), dout⟩ = ⟨x, dx⟩ = ⟨w, dw⟩ without bias: the convolution is linear
    in x and in w, and the backward pass applies its transpose."""
    for case in checks.random_conv_cases(rng, 3):
        case = case._replace(b=None)
        out, cache = conv2d_forward_naive(case.x, case.w, None, case.stride, case.padding)
        dx, dw, _ = conv2d_backward_naive(case.dout, cache)
        total = float(np.sum(out * case.dout))
        for name, grad, arg in (("dx", dx, case.x), ("dw", dw, case.w)):
            inner = float(np.sum(grad * arg))
            if abs(inner - total) > 1e-9 * max(abs(total), 1.0) * np.sqrt(out.size):
                checks.fail(f"{NAMES[1]} ({case.describe()}): ⟨{name}, {name[1:]}⟩ = {inner:.8g} but "
                            f"⟨out, dout⟩ = {total:.8g}; they are equal for the transpose of the convolution")
