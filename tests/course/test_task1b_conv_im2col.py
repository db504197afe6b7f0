"""Task 1b: the vectorised convolution of the reference backend,
conv2d_forward and conv2d_backward (and the im2col helper _windows) in
tqref/functional/conv.py.

The same references as task 1a (the FFT convolution and its numeric
gradients), on larger random convolutions; and a check that the code does
not loop over every output pixel in Python.
"""

import numpy as np
import pytest

import tqref
from tqref.course import checks
from tqref.functional.conv import conv2d_backward, conv2d_forward

pytestmark = pytest.mark.task1b
NAMES = ("conv2d_forward", "conv2d_backward")


def test_forward_on_random_convolutions(rng):
    for case in checks.random_conv_cases(rng, 5, max_batch=4, max_channels=6, max_size=12, max_filters=8,
                                         max_kernel=5):
        checks.check_conv_forward(NAMES[0], conv2d_forward, case)


def test_forward_edge_cases(rng):
    cases = [
        checks.conv_case(rng, 1, 1, 3, 3, 1, 3, 3, 1, 0, True),     # one window
        checks.conv_case(rng, 2, 3, 5, 4, 2, 1, 1, 1, 0, True),     # 1×1
        checks.conv_case(rng, 1, 2, 4, 5, 3, 3, 2, 1, 3, False),    # padding wider than the kernel
        checks.conv_case(rng, 2, 2, 8, 7, 2, 2, 3, 3, 0, True),     # stride > kernel
        checks.conv_case(rng, 2, 16, 8, 8, 8, 3, 3, 2, 1, False, np.float32),
    ]
    for case in cases:
        checks.check_conv_forward(NAMES[0], conv2d_forward, case)


def test_backward_on_random_convolutions(rng):
    for case in checks.random_conv_cases(rng, 3, max_batch=3, max_channels=4, max_size=9, max_filters=5,
                                         max_kernel=4):
        checks.check_conv_backward(NAMES, conv2d_forward, conv2d_backward, case)


def test_backward_edge_cases(rng):
    cases = [
        checks.conv_case(rng, 1, 2, 4, 5, 3, 3, 2, 1, 3, False),    # padding wider than the kernel
        checks.conv_case(rng, 2, 2, 8, 7, 2, 2, 3, 3, 0, True),     # stride > kernel: pixels without gradient
        checks.conv_case(rng, 2, 3, 5, 4, 2, 1, 1, 1, 0, True),     # 1×1
        checks.conv_case(rng, 3, 2, 7, 6, 2, 3, 3, 2, 1, True),     # stride 2: overlapping windows, batch 3
        checks.conv_case(rng, 2, 4, 6, 6, 3, 3, 3, 1, 1, True, np.float32),
    ]
    for case in cases:
        checks.check_conv_backward(NAMES, conv2d_forward, conv2d_backward, case)


def test_no_python_loop_over_output_pixels(rng):
    """A loop over every (n, f, i, j) runs tens of thousands of Python lines here; the
    vectorised version a few hundred (NumPy's own included) plus one line per kernel
    offset or channel.  Counted, not timed: the machine's speed does not matter."""
    case = checks.conv_case(rng, 4, 4, 12, 12, 8, 3, 3, 1, 1, True)
    (out, cache), forward_lines = checks.python_lines_executed(conv2d_forward, case.x, case.w, case.b, 1, 1)
    _, backward_lines = checks.python_lines_executed(conv2d_backward, case.dout, cache)
    pixels = case.dout.size  # N·F·H_out·W_out = 4608
    for name, lines in ((NAMES[0], forward_lines), (NAMES[1], backward_lines)):
        if lines > pixels // 2:
            checks.fail(f"{name}({case.describe()}) ran {lines:,} Python lines for {pixels:,} output values: "
                        f"a loop over the output pixels? Vectorise it (im2col and a matrix product)")


def test_a_conv_layer_runs_on_it(rng):
    """A Conv2d layer on the reference backend calls these two functions: its output and
    gradients are the FFT reference's and its numeric gradients."""
    from tqref.nn import Conv2d
    x = rng.standard_normal((2, 3, 6, 6))
    layer = Conv2d(3, 4, 3, stride=1, padding=1, rng=int(rng.integers(1 << 30))).astype(np.float64)
    with tqref.use_backend("reference"):
        out = layer.forward(x)
        dout = rng.standard_normal(out.shape)
        dx = layer.backward(dout)
    case = checks.ConvCase(x, layer.params["weight"], layer.params["bias"], 1, 1, dout)
    checks.check_array("Conv2d.forward on the reference backend: out", out,
                       checks.conv_reference(x, case.w, case.b, 1, 1), 1e-9)
    numeric = checks.conv_numeric_gradients(case)
    checks.check_array("Conv2d.backward on the reference backend: dx", dx, numeric["dx"], 1e-7)
    checks.check_array("Conv2d.backward on the reference backend: grads['weight']", layer.grads["weight"],
                       numeric["dw"], 1e-7)
