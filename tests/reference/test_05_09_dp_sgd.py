"""05.09's DP-SGD from scratch (utils.privacy) against Opacus 1.6: per-sample gradients == `GradSampleModule`'s
`grad_sample` (MLP and CNN, several batch sizes), the clipped and noised gradient == `DPOptimizer.pre_step()` with the
same generator (no noise, and noise), the noise std == σC measured, and ε == Opacus' accountants."""

from __future__ import annotations

import pytest
import torch
from opacus import GradSampleModule
from opacus.accountants import RDPAccountant
from opacus.optimizers import DPOptimizer
from torch import nn

from utils.privacy import clip_and_noise, epsilon, per_sample_grads, poisson_batch, train_dp_sgd

pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing")  # opacus' hooks on input layers


def mlp(seed: int, d_in: int = 20, n_classes: int = 5) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d_in, 16), nn.ReLU(), nn.Linear(16, n_classes))


def cnn(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))


def data(seed: int, batch: int, shape: tuple[int, ...], n_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return 3 * torch.randn(batch, *shape, generator=gen), torch.randint(0, n_classes, (batch,), generator=gen)


def opacus_grad_sample(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
    gsm = GradSampleModule(model, loss_reduction="mean")
    nn.functional.cross_entropy(gsm(x), y).backward()
    return [p.grad_sample for p in gsm.parameters()]


@pytest.mark.parametrize("seed, batch", [(0, 1), (1, 7), (2, 32)])
def test_per_sample_grads_equal_opacus_mlp(seed, batch):
    model = mlp(seed)
    x, y = data(seed, batch, (20,), 5)
    ours = per_sample_grads(model, x, y)
    theirs = opacus_grad_sample(mlp(seed), x, y)
    assert len(ours) == len(theirs) == 4
    for g, t in zip(ours.values(), theirs):
        assert g.shape == t.shape == (batch, *t.shape[1:])
        torch.testing.assert_close(g, t, rtol=1e-5, atol=1e-6)


def test_per_sample_grads_equal_opacus_cnn():
    x, y = data(3, 9, (1, 8, 8), 3)
    ours = per_sample_grads(cnn(3), x, y)
    for g, t in zip(ours.values(), opacus_grad_sample(cnn(3), x, y)):
        torch.testing.assert_close(g, t, rtol=1e-5, atol=1e-6)


def test_per_sample_grads_are_not_the_batch_gradient():
    # The mean of the per-sample gradients is the batch gradient; any single one is not.
    model = mlp(4)
    x, y = data(4, 8, (20,), 5)
    ours = per_sample_grads(model, x, y)
    nn.functional.cross_entropy(model(x), y).backward()
    for (name, g), p in zip(ours.items(), model.parameters()):
        torch.testing.assert_close(g.mean(0), p.grad, rtol=1e-5, atol=1e-6)
        assert not torch.allclose(g[0], p.grad, atol=1e-4)


def opacus_step(seed: int, batch: int, max_grad_norm: float, sigma: float, noise_seed: int) -> list[torch.Tensor]:
    model = GradSampleModule(mlp(seed), loss_reduction="mean")
    x, y = data(seed, batch, (20,), 5)
    opt = DPOptimizer(torch.optim.SGD(model.parameters(), lr=1.0), noise_multiplier=sigma,
                      max_grad_norm=max_grad_norm, expected_batch_size=batch,
                      generator=torch.Generator().manual_seed(noise_seed))
    nn.functional.cross_entropy(model(x), y).backward()
    opt.pre_step()  # clip, accumulate, add noise, scale: p.grad is what the optimizer step would use
    return [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("max_grad_norm", [0.01, 0.5, 100.0])  # all clipped, some clipped, none clipped
@pytest.mark.parametrize("sigma", [0.0, 1.1])
def test_clip_and_noise_equals_dp_optimizer(max_grad_norm, sigma):
    seed, batch = 5, 16
    x, y = data(seed, batch, (20,), 5)
    ours = clip_and_noise(per_sample_grads(mlp(seed), x, y), max_grad_norm, sigma, batch,
                          torch.Generator().manual_seed(42))
    theirs = opacus_step(seed, batch, max_grad_norm, sigma, noise_seed=42)
    for g, t in zip(ours.values(), theirs):
        torch.testing.assert_close(g, t, rtol=1e-5, atol=1e-6)


def test_clipping_bounds_each_example():
    x, y = data(6, 12, (20,), 5)
    grads = per_sample_grads(mlp(6), x, y)
    for i in range(12):  # one example alone, no noise, batch size 1: its clipped gradient has norm ≤ C
        one = clip_and_noise({n: g[i:i + 1] for n, g in grads.items()}, 0.1, 0.0, 1.0)
        norm = torch.sqrt(sum((g ** 2).sum() for g in one.values()))
        assert norm <= 0.1 + 1e-6


def test_noise_std_is_sigma_times_c():
    # Zero gradients: what comes out is the noise / B, whose std must be σC / B.
    grads = {"w": torch.zeros(4, 200_000)}
    out = clip_and_noise(grads, max_grad_norm=0.7, noise_multiplier=1.3, expected_batch_size=4.0,
                         generator=torch.Generator().manual_seed(0))["w"]
    assert abs(out.std().item() - 1.3 * 0.7 / 4) < 0.01 * (1.3 * 0.7 / 4)
    assert abs(out.mean().item()) < 0.01


@pytest.mark.parametrize("sigma, q, steps", [(1.1, 0.01, 1000), (0.8, 0.1, 50), (2.0, 0.004, 2000)])
def test_epsilon_equals_opacus_accountant(sigma, q, steps):
    acc = RDPAccountant()
    for _ in range(steps):
        acc.step(noise_multiplier=sigma, sample_rate=q)
    assert epsilon(sigma, q, steps, 1e-5) == pytest.approx(acc.get_epsilon(1e-5), rel=1e-9)
    assert epsilon(sigma, q, steps, 1e-5, "prv") == pytest.approx(acc.get_epsilon(1e-5), rel=0.15)


def test_poisson_batch_size_is_binomial():
    gen = torch.Generator().manual_seed(0)
    sizes = torch.tensor([len(poisson_batch(1000, 0.05, gen)) for _ in range(400)], dtype=torch.float)
    assert abs(sizes.mean().item() - 50) < 1.5  # n q
    assert abs(sizes.var().item() - 1000 * 0.05 * 0.95) < 10  # n q (1 - q)


def test_train_dp_sgd_learns_without_noise_and_noise_hurts():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(600, 20, generator=gen)
    y = (x[:, :5].argmax(1))  # a learnable rule
    accs = {}
    for sigma in (0.0, 30.0):
        model = mlp(0)
        train_dp_sgd(model, x, y, steps=150, lr=0.5, sample_rate=0.1, max_grad_norm=1.0, noise_multiplier=sigma)
        accs[sigma] = (model(x).argmax(1) == y).float().mean().item()
    assert accs[0.0] > 0.7
    assert accs[30.0] < accs[0.0] - 0.1


@pytest.mark.parametrize("bad", [dict(max_grad_norm=0.0), dict(noise_multiplier=-1.0), dict(expected_batch_size=0)])
def test_clip_and_noise_rejects_bad_arguments(bad):
    args = dict(max_grad_norm=1.0, noise_multiplier=1.0, expected_batch_size=4.0) | bad
    with pytest.raises(ValueError):
        clip_and_noise({"w": torch.zeros(2, 3)}, **args)
