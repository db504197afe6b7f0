"""tqref: a readable NumPy + Numba reference for ternarized-weight CNNs.

He, Gong, Fan, "Optimize Deep Convolutional Neural Network with Ternarized
Weights and High Accuracy", WACV 2019 (arXiv:1807.07948).

Layers of the package, bottom to top (imports only point down):

    kernels/     Numba kernels the fast operations call
    functional/  stateless math: op_forward(...) -> (out, cache), op_backward(dout, cache)
    nn/          layers with parameters (Module, Conv2d, BatchNorm2d, ...)
    models/      CIFAR ResNet-20/32/44/56 and a small demo net
    optim.py     SGD with momentum / Nesterov / weight decay, learning-rate schedules
    gradcheck.py numeric gradients for tests and notebooks
"""

__version__ = "0.1.0"

DEFAULT_DTYPE = "float32"
