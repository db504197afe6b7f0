"""The residual basic block of the CIFAR ResNets (He et al. 2016):

    out = ReLU( BN2(conv2( ReLU(BN1(conv1(x))) )) + shortcut(x) )

conv1 is 3×3 with the block's stride, conv2 3×3 stride 1, both without bias
(BN's β plays that role).  The shortcut is the identity, or "option A"
(every second pixel, zero-padded channels) when the block changes shape.
"""

import numpy as np

from tqref.nn.layers import BatchNorm2d, Conv2d, OptionAShortcut, ReLU
from tqref.nn.module import Module


class BasicBlock(Module):
    """x: (N, in_planes, H, W) -> (N, planes, H/stride, W/stride)."""

    def __init__(self, in_planes, planes, stride=1, dtype=np.float32, rng=None):
        super().__init__()
        self.conv1 = Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False, dtype=dtype, rng=rng)
        self.bn1 = BatchNorm2d(planes, dtype=dtype)
        self.relu1 = ReLU()  # relu1, relu2: the structure; forward runs them fused into bn1, bn2
        self.conv2 = Conv2d(planes, planes, 3, stride=1, padding=1, bias=False, dtype=dtype, rng=rng)
        self.bn2 = BatchNorm2d(planes, dtype=dtype)
        self.relu2 = ReLU()
        self.shortcut = OptionAShortcut(in_planes, planes) if (stride != 1 or in_planes != planes) else None

    def forward(self, x):
        # Unfused, this is:
        #   out = relu1(bn1(conv1(x)));  out = relu2(bn2(conv2(out)) + shortcut(x))
        # BatchNorm2d.forward_relu does each "BN (+ add) + ReLU" in one pass.
        out = self.bn1.forward_relu(self.conv1.forward(x))
        skip = x if self.shortcut is None else self.shortcut.forward(x)
        return self.bn2.forward_relu(self.conv2.forward(out), residual=skip)

    def backward(self, dout):
        # the derivative of the forward, read from the bottom up; dsum is the
        # gradient of the sum before relu2, which flows unchanged to both branches
        dmain, dsum = self.bn2.backward_relu(dout)
        dx_skip = dsum if self.shortcut is None else self.shortcut.backward(dsum)
        dmain, _ = self.bn1.backward_relu(self.conv2.backward(dmain))
        dx_main = self.conv1.backward(dmain)
        return dx_main + dx_skip
