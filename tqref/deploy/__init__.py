"""Deployment: BN folding, the packed ternary file, and the add-only inference engine.

    fold.py    fold_batchnorm, groups (per expansion or merged levels), fold_resnet -> FoldedLayers;
               resnet_program: a ResNetCIFAR's layers and blocks, read from its modules
    pack.py    export_packed(model, path, packing="2bit"|"base3", metadata=None) -> bytes written
               load_packed(path) -> PackedModel; code packing (2 bits, base 3) with loop twins
    engine.py  PackedModel: .forward(x) (Numba add-only kernels), .forward_naive(x) (dense
               tqref.functional twin), .operation_counts(), .metadata, .architecture;
               model_layout: the program it runs, from resnet_program

    from tqref.deploy import export_packed, load_packed
    n_bytes = export_packed(model, "resnet20.tqpk.npz", metadata={"top1": 0.91})
    logits = load_packed("resnet20.tqpk.npz").forward(x)      # x: (N, 3, 32, 32) float32
"""

from tqref.deploy.engine import PackedModel, model_layout
from tqref.deploy.fold import FoldedLayer, fold_batchnorm, fold_resnet, groups
from tqref.deploy.pack import (
    FORMAT_VERSION,
    MAGIC,
    PackedFormatError,
    export_packed,
    is_packed_file,
    load_packed,
    packed_arrays,
    read_packed,
)

__all__ = ["PackedModel", "model_layout", "FoldedLayer", "fold_batchnorm", "fold_resnet", "groups",
           "FORMAT_VERSION", "MAGIC", "PackedFormatError", "export_packed", "is_packed_file", "load_packed",
           "packed_arrays", "read_packed"]
