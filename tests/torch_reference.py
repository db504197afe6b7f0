"""The usual PyTorch CIFAR ResNet (He et al. 2016, option-A shortcuts), and
the paper's ternarization as a PyTorch straight-through function, both
written independently of tqref: for the tests that check tqref's PyTorch
export (``tqref.io.export_torch``: ``tests/test_io.py``,
``tests/test_results.py``) and its training steps
(``tests/test_torch_training.py``) against PyTorch.

Its parameter and buffer names are the ones the export writes (``conv1.weight``,
``bn1.running_var``, ``layer2.0.conv1.weight``, ``linear.bias``, ...), so
``net.load_state_dict(state, strict=True)`` takes an exported file as it is.
"""

import pytest

DEPTHS = (20, 32, 44, 56)


def torch_cifar_resnet(depth=20, num_classes=10):
    """(torch, net): a fresh PyTorch CIFAR ResNet-``depth`` in training mode.

    depth:  20, 32, 44 or 56; each of the three stages (16, 32, 64 channels)
            has n = (depth − 2) / 6 basic blocks, the first block of stages 2
            and 3 halves the image with stride 2.
    The test calling this is skipped when torch is not installed."""
    if depth not in DEPTHS:
        raise ValueError(f"torch_cifar_resnet: depth: expected one of {DEPTHS}, got {depth!r}")
    torch = pytest.importorskip("torch")
    nn, F = torch.nn, torch.nn.functional

    class OptionAShortcut(nn.Module):
        """Every second pixel, channels zero-padded on both sides: no parameters."""

        def __init__(self, planes):
            super().__init__()
            self.pad = planes // 4

        def forward(self, x):
            return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))

    class BasicBlock(nn.Module):
        def __init__(self, in_planes, planes, stride=1):
            super().__init__()
            self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.shortcut = nn.Sequential()  # identity
            if stride != 1 or in_planes != planes:
                self.shortcut = OptionAShortcut(planes)

        def forward(self, x):
            out = F.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            return F.relu(out + self.shortcut(x))

    class ResNet(nn.Module):
        def __init__(self, n):
            super().__init__()
            self.in_planes = 16
            self.conv1 = nn.Conv2d(3, 16, 3, stride=1, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(16)
            self.layer1 = self._stage(16, n, 1)
            self.layer2 = self._stage(32, n, 2)
            self.layer3 = self._stage(64, n, 2)
            self.linear = nn.Linear(64, num_classes)

        def _stage(self, planes, n, stride):
            blocks = []
            for s in [stride] + [1] * (n - 1):
                blocks.append(BasicBlock(self.in_planes, planes, s))
                self.in_planes = planes
            return nn.Sequential(*blocks)

        def forward(self, x):
            out = F.relu(self.bn1(self.conv1(x)))
            out = self.layer3(self.layer2(self.layer1(out)))
            out = F.avg_pool2d(out, out.size()[3]).view(out.size(0), -1)  # global average pool
            return self.linear(out)

    return torch, ResNet((depth - 2) // 6)


def ternarize_torch_net(torch, net, delta_factors=(0.05,), clip=1.0):
    """Make every Conv2d and Linear of ``net`` compute with ternarized weights,
    in place, as ../shared/docs/method.md states the method:

        forward   Δ_k = δ_k · max|W|,  T_k = sign(W) · 1[|W| ≥ Δ_k],
                  α_k = mean{|W_i| : |W_i| ≥ Δ_k},  W_eff = Σ_k α_k T_k     Eqs. (1)-(3), (5)
        backward  ∂L/∂W = t_ex · ∂L/∂W_eff · 1[|W| < clip]                   Eq. (4), (5)

    The layer's ``weight`` stays the latent weight the optimiser updates."""
    import types
    F = torch.nn.functional

    class Ternarize(torch.autograd.Function):
        @staticmethod
        def forward(ctx, latent_weight):
            ctx.save_for_backward(latent_weight)
            magnitude = latent_weight.abs()
            effective = torch.zeros_like(latent_weight)
            for delta_factor in delta_factors:
                kept = magnitude >= delta_factor * magnitude.max()
                effective = effective + magnitude[kept].mean() * torch.sign(latent_weight) * kept
            return effective

        @staticmethod
        def backward(ctx, grad_effective):
            (latent_weight,) = ctx.saved_tensors
            return len(delta_factors) * grad_effective * (latent_weight.abs() < clip)

    def conv_forward(self, x):
        return F.conv2d(x, Ternarize.apply(self.weight), self.bias, self.stride, self.padding)

    def linear_forward(self, x):
        return F.linear(x, Ternarize.apply(self.weight), self.bias)

    for module in net.modules():
        if isinstance(module, torch.nn.Conv2d):
            module.forward = types.MethodType(conv_forward, module)
        elif isinstance(module, torch.nn.Linear):
            module.forward = types.MethodType(linear_forward, module)
    return net
