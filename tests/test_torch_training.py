"""tqref's training step against PyTorch's, on the same network and batches.

The whole-model gradient checks (tests/test_models.py) hold every layer's
backward against numeric derivatives, and tests/test_optim.py holds SGD
against torch.optim.SGD.  This checks the step the trainer takes as one
piece (tqref.train.Trainer.train_epoch: forward, softmax cross-entropy,
backward, SGD with Nesterov momentum and weight decay on every parameter,
batch norm's running statistics), and the paper's ternarization inside it,
against an independent PyTorch version of the same (tests/torch_reference.py):
a ResNet-20 in float64 takes a few steps on the same random batches in both,
and every parameter, momentum buffer and running statistic must agree.
Skipped without torch."""

import numpy as np
import pytest
from torch_reference import ternarize_torch_net, torch_cifar_resnet

from tqref.functional import softmax_cross_entropy
from tqref.models import resnet20
from tqref.optim import SGD
from tqref.ternary import ternarize_model
from tqref.train import TrainConfig

PAPER = TrainConfig()  # the recipe's optimiser settings: lr, momentum, Nesterov, weight decay
DELTA_FACTORS = {1: (0.05,), 2: (0.05, 0.10)}  # method.md, Eq. (5)
CLIPPED = "layer1.0.conv1.weight"
STEPS = 3


@pytest.mark.parametrize("t_ex", [None, 1, 2], ids=["full-precision", "ternary", "ternary-t_ex2"])
def test_training_steps_equal_pytorchs(t_ex):
    torch, net = torch_cifar_resnet(20)
    torch.set_num_threads(1)
    net.double().train()

    model = resnet20(dtype=np.float64, seed=3)
    if t_ex is not None:
        ternarize_model(model, t_ex=t_ex)
        # latent weights beyond the clip |W| < 1 of Eq. (4), whose gradient must stop there
        dict(model.named_parameters())[CLIPPED][0, 0, 0, :2] = (1.5, -1.2)
        ternarize_torch_net(torch, net, DELTA_FACTORS[t_ex])
    model.train()
    state = {k: torch.from_numpy(v.copy()) for k, v in model.state_dict().items()}
    missing, unexpected = net.load_state_dict(state, strict=False)
    assert not unexpected and all(k.endswith("num_batches_tracked") for k in missing)

    optimizer = SGD(model.parameters_and_gradients(), lr=PAPER.lr, momentum=PAPER.momentum,
                    nesterov=PAPER.nesterov, weight_decay=PAPER.weight_decay)
    torch_optimizer = torch.optim.SGD(net.parameters(), lr=PAPER.lr, momentum=PAPER.momentum,
                                      nesterov=PAPER.nesterov, weight_decay=PAPER.weight_decay)
    rng = np.random.default_rng(4)
    for step in range(STEPS):
        x = rng.standard_normal((8, 3, 32, 32))
        y = rng.integers(0, 10, 8)
        # tqref, as Trainer.train_epoch does it
        logits = model.forward(x)
        loss, dlogits = softmax_cross_entropy(logits, y)
        model.backward(dlogits)
        optimizer.step()
        # PyTorch
        torch_optimizer.zero_grad()
        torch_logits = net(torch.from_numpy(x))
        torch_loss = torch.nn.functional.cross_entropy(torch_logits, torch.from_numpy(y))
        torch_loss.backward()
        torch_optimizer.step()
        np.testing.assert_allclose(logits, torch_logits.detach().numpy(), rtol=1e-9, atol=1e-10)
        assert loss == pytest.approx(torch_loss.item(), rel=1e-10)

    torch_state = net.state_dict()
    for name, value in model.state_dict().items():
        np.testing.assert_allclose(value, torch_state[name].numpy(), rtol=1e-9, atol=1e-11, err_msg=name)
    # the momentum buffers too, so the next step would agree as well
    momentum = {name: torch_optimizer.state[p]["momentum_buffer"].numpy() for name, p in net.named_parameters()}
    buffers = {k[len("momentum."):]: v for k, v in optimizer.state_dict().items() if k.startswith("momentum.")}
    assert sorted(buffers) == sorted(momentum)
    for name, buffer in buffers.items():
        np.testing.assert_allclose(buffer, momentum[name], rtol=1e-9, atol=1e-11, err_msg=name)
    if t_ex is not None:
        # the two latent weights beyond the clip got no loss gradient: weight decay alone moved them
        clipped = np.array([1.5, -1.2])
        velocity = np.zeros(2)
        for _ in range(STEPS):
            grad = PAPER.weight_decay * clipped
            velocity = PAPER.momentum * velocity + grad
            clipped = clipped - PAPER.lr * (grad + PAPER.momentum * velocity)  # Nesterov
        np.testing.assert_allclose(dict(model.named_parameters())[CLIPPED][0, 0, 0, :2], clipped, rtol=1e-12)
