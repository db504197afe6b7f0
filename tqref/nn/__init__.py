"""Layers with parameters (built on ``tqref.functional``)."""

from tqref.nn.blocks import BasicBlock
from tqref.nn.layers import (
    BatchNorm2d,
    Conv2d,
    GlobalAvgPool2d,
    Linear,
    MaxPool2x2,
    OptionAShortcut,
    ReLU,
    Sequential,
    WeightedLayer,
)
from tqref.nn.module import Module, no_grad

__all__ = [
    "Module", "no_grad", "Conv2d", "Linear", "BatchNorm2d", "ReLU", "MaxPool2x2", "GlobalAvgPool2d",
    "OptionAShortcut", "Sequential", "BasicBlock", "WeightedLayer",
]
