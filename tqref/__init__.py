"""tqref: a readable NumPy + Numba reference for ternarized-weight CNNs.

He, Gong, Fan, "Optimize Deep Convolutional Neural Network with Ternarized
Weights and High Accuracy", WACV 2019 (arXiv:1807.07948).

Layers of the package, bottom to top (imports only point down):

    kernels/     the fast backend: Numba kernels, channels-last, threaded, fused
    functional/  stateless math: op_forward(...) -> (out, cache), op_backward(dout, cache),
                 as loops (``*_naive``) and as the reference backend's NumPy
    backend.py   which of the two backends the layers run (``use_backend``)
    nn/          layers with parameters (Module, Conv2d, BatchNorm2d, ...)
    models/      CIFAR ResNet-20/32/44/56 and a small demo net
    optim.py     SGD with momentum / Nesterov / weight decay, learning-rate schedules
    gradcheck.py numeric gradients for tests and notebooks
"""

from tqref.backend import current_backend, get_backend, use_backend

__version__ = "0.1.0"
__all__ = ["current_backend", "get_backend", "use_backend", "__version__"]
