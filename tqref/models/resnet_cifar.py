"""CIFAR ResNets (He et al. 2016, section 4.2), the networks of the paper's table.

    conv3×3(3→16) - BN - ReLU
    stage 1: n BasicBlocks, 16 channels, 32×32
    stage 2: n BasicBlocks, 32 channels, 16×16 (first block stride 2)
    stage 3: n BasicBlocks, 64 channels,  8×8  (first block stride 2)
    global average pool - linear 64→10

depth = 6n + 2: ResNet-20 (n=3), -32 (5), -44 (7), -56 (9).  Shortcuts that
change shape use "option A" (no parameters), so the parameter counts are
269,722 / 464,154 / 658,586 / 853,018.  Names follow the usual PyTorch CIFAR
ResNet (``conv1``, ``bn1``, ``layer1.0.conv1``, ..., ``linear``).

x: (N, 3, 32, 32) -> logits (N, num_classes).
"""

import numpy as np

from tqref.nn import BasicBlock, BatchNorm2d, Conv2d, GlobalAvgPool2d, Linear, Module, ReLU, Sequential
from tqref.nn.init import as_generator

DEPTHS = (20, 32, 44, 56)


class ResNetCIFAR(Module):
    def __init__(self, depth=20, num_classes=10, dtype=np.float32, seed=0):
        super().__init__()
        if depth not in DEPTHS:
            raise ValueError(f"ResNetCIFAR: depth: expected one of {DEPTHS}, got {depth!r}")
        self.depth, self.num_classes = depth, num_classes
        n = (depth - 2) // 6
        rng = as_generator(seed)
        self.conv1 = Conv2d(3, 16, 3, stride=1, padding=1, bias=False, dtype=dtype, rng=rng)
        self.bn1 = BatchNorm2d(16, dtype=dtype)
        self.relu = ReLU()
        self.layer1 = self._stage(16, 16, n, 1, dtype, rng)
        self.layer2 = self._stage(16, 32, n, 2, dtype, rng)
        self.layer3 = self._stage(32, 64, n, 2, dtype, rng)
        self.pool = GlobalAvgPool2d()
        self.linear = Linear(64, num_classes, dtype=dtype, rng=rng)

    @staticmethod
    def _stage(in_planes, planes, n_blocks, stride, dtype, rng):
        blocks = [BasicBlock(in_planes, planes, stride, dtype=dtype, rng=rng)]
        blocks += [BasicBlock(planes, planes, 1, dtype=dtype, rng=rng) for _ in range(n_blocks - 1)]
        return Sequential(*blocks)

    def extra_repr(self):
        return f"depth={self.depth}, num_classes={self.num_classes}"

    def forward(self, x):
        out = self.relu.forward(self.bn1.forward(self.conv1.forward(x)))
        out = self.layer3.forward(self.layer2.forward(self.layer1.forward(out)))
        return self.linear.forward(self.pool.forward(out))

    def backward(self, dlogits):
        dout = self.pool.backward(self.linear.backward(dlogits))
        dout = self.layer1.backward(self.layer2.backward(self.layer3.backward(dout)))
        return self.conv1.backward(self.bn1.backward(self.relu.backward(dout)))


def resnet20(**kwargs):
    return ResNetCIFAR(20, **kwargs)


def resnet32(**kwargs):
    return ResNetCIFAR(32, **kwargs)


def resnet44(**kwargs):
    return ResNetCIFAR(44, **kwargs)


def resnet56(**kwargs):
    return ResNetCIFAR(56, **kwargs)
