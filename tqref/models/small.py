"""A small convolutional net for demos and fast tests (≈ 25k parameters):

    conv3×3(3→16)-BN-ReLU-maxpool2 → conv3×3(16→32)-BN-ReLU-maxpool2
    → conv3×3(32→64)-BN-ReLU → global average pool → linear 64→10

x: (N, 3, H, W) with H, W ≥ 4 (32×32 for CIFAR) -> logits (N, num_classes).
"""

import numpy as np

from tqref.nn import BatchNorm2d, Conv2d, GlobalAvgPool2d, Linear, MaxPool2x2, ReLU, Sequential
from tqref.nn.init import as_generator


class SmallConvNet(Sequential):
    def __init__(self, num_classes=10, width=16, dtype=np.float32, seed=0):
        rng = as_generator(seed)
        w = width

        def conv_bn_relu(c_in, c_out):
            return [Conv2d(c_in, c_out, 3, padding=1, bias=False, dtype=dtype, rng=rng),
                    BatchNorm2d(c_out, dtype=dtype), ReLU()]

        super().__init__(
            *conv_bn_relu(3, w), MaxPool2x2(),
            *conv_bn_relu(w, 2 * w), MaxPool2x2(),
            *conv_bn_relu(2 * w, 4 * w),
            GlobalAvgPool2d(),
            Linear(4 * w, num_classes, dtype=dtype, rng=rng),
        )
        self.num_classes = num_classes


def small_cnn(**kwargs):
    return SmallConvNet(**kwargs)
