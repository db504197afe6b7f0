"""Models: the CIFAR ResNets of the paper's table and a small demo net."""

from tqref.models.resnet_cifar import ResNetCIFAR, resnet20, resnet32, resnet44, resnet56
from tqref.models.small import SmallConvNet, small_cnn

MODELS = {
    "resnet20": resnet20,
    "resnet32": resnet32,
    "resnet44": resnet44,
    "resnet56": resnet56,
    "small": small_cnn,
}


def get_model(name, **kwargs):
    """Build a model by name (see ``MODELS``): ``get_model("resnet20", seed=0)``."""
    if name not in MODELS:
        raise ValueError(f"get_model: name: expected one of {sorted(MODELS)}, got {name!r}")
    return MODELS[name](**kwargs)


__all__ = ["MODELS", "get_model", "ResNetCIFAR", "SmallConvNet",
           "resnet20", "resnet32", "resnet44", "resnet56", "small_cnn"]
