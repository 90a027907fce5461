"""DP-SGD from scratch (Abadi et al., 2016): per-sample gradients, clipping, Gaussian noise, Poisson sampling.

Introduced in 05_frontier/09_responsible_ai.ipynb. One DP-SGD step: sample a batch (each example joins with
probability q), compute each example's gradient g_i, clip it to norm C, sum, add N(0, (σC)²) noise, divide by the
expected batch size qN. The privacy accounting (σ, q, steps → ε at a given δ) is Opacus' accountant: deriving it is
a paper of its own. tests/reference/test_05_09_dp_sgd.py checks the per-sample gradients against Opacus'
`GradSampleModule` and the clipped, noised gradient against its `DPOptimizer` with the same generator.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

CLIP_EPS = 1e-6
"""Opacus divides by (norm + 1e-6) when clipping; the same constant keeps the two equal to the last bit."""


def per_sample_grads(model: "torch.nn.Module", x: "torch.Tensor", y: "torch.Tensor") -> dict[str, "torch.Tensor"]:
    """{parameter name: (B, *shape)} — the gradient of each example's cross-entropy, via torch.func.vmap(grad)."""
    import torch
    import torch.nn.functional as F
    from torch.func import functional_call, grad, vmap

    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must hold the same number of examples; got {x.shape[0]} and {y.shape[0]}.")
    params = {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}

    def loss_one(p: dict[str, torch.Tensor], xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        logits = functional_call(model, p, (xi.unsqueeze(0),))  # a batch of one: (1, n_classes)
        return F.cross_entropy(logits, yi.unsqueeze(0))

    return vmap(grad(loss_one), in_dims=(None, 0, 0))(params, x, y)  # each (B, *shape)


def clip_and_noise(grads: dict[str, "torch.Tensor"], max_grad_norm: float, noise_multiplier: float,
                   expected_batch_size: float, generator: "torch.Generator | None" = None) -> dict[str, "torch.Tensor"]:
    """The DP-SGD gradient: (Σ_i clip_C(g_i) + N(0, σ²C²)) / expected batch size, noise drawn parameter by parameter."""
    import torch

    if max_grad_norm <= 0 or noise_multiplier < 0 or expected_batch_size <= 0:
        raise ValueError(f"need max_grad_norm > 0, noise_multiplier ≥ 0, expected_batch_size > 0; got "
                         f"{max_grad_norm}, {noise_multiplier}, {expected_batch_size}.")
    flat = [g.reshape(g.shape[0], -1) for g in grads.values()]  # each (B, n_params of that tensor)
    norms = torch.stack([f.norm(2, dim=1) for f in flat], dim=1).norm(2, dim=1)  # (B,) ‖g_i‖ over all parameters
    factor = (max_grad_norm / (norms + CLIP_EPS)).clamp(max=1.0)  # (B,) min(1, C/‖g_i‖)
    out = {}
    for name, g in grads.items():
        summed = torch.einsum("i,i...->...", factor, g)  # Σ_i factor_i g_i: (*shape)
        std = noise_multiplier * max_grad_norm  # σC: the noise is calibrated to one example's largest influence
        noise = torch.normal(0.0, std, size=summed.shape, generator=generator) if std > 0 else 0.0
        out[name] = (summed + noise) / expected_batch_size
    return out


def poisson_batch(n: int, sample_rate: float, generator: "torch.Generator | None" = None) -> "torch.Tensor":
    """Indices of a Poisson-sampled batch: each of the n examples joins independently with probability q."""
    import torch

    if not 0.0 < sample_rate <= 1.0:
        raise ValueError(f"sample_rate must be in (0, 1]; got {sample_rate}.")
    return torch.nonzero(torch.rand(n, generator=generator) < sample_rate).flatten()  # (|B|,), |B| ~ Binomial(n, q)


def train_dp_sgd(model: "torch.nn.Module", x: "torch.Tensor", y: "torch.Tensor", *, steps: int, lr: float,
                 sample_rate: float, max_grad_norm: float, noise_multiplier: float, seed: int = 0,
                 progress: bool = False) -> dict[str, Any]:
    """Train `model` in place with DP-SGD (plain SGD update); returns {"loss": [...], "batch_size": [...]}."""
    import torch
    import torch.nn.functional as F
    from tqdm.auto import tqdm

    if steps < 1 or lr <= 0:
        raise ValueError(f"need steps ≥ 1 and lr > 0; got steps={steps}, lr={lr}.")
    generator = torch.Generator().manual_seed(seed)
    expected = sample_rate * len(x)  # Opacus divides by the EXPECTED batch size, not the drawn one
    history: dict[str, list] = {"loss": [], "batch_size": []}
    for _ in tqdm(range(steps), desc=f"DP-SGD σ={noise_multiplier:.2f}", disable=not progress, leave=False):
        index = poisson_batch(len(x), sample_rate, generator)
        if len(index) == 0:  # an empty batch still gets noise: skipping it would leak that it was empty
            grads = {n: torch.zeros(0, *p.shape) for n, p in model.named_parameters()}
        else:
            grads = per_sample_grads(model, x[index], y[index])
            with torch.no_grad():
                history["loss"].append(F.cross_entropy(model(x[index]), y[index]).item())
        noisy = clip_and_noise(grads, max_grad_norm, noise_multiplier, expected, generator)
        with torch.no_grad():
            for name, p in model.named_parameters():
                p -= lr * noisy[name]
        history["batch_size"].append(len(index))
    return history


def epsilon(noise_multiplier: float, sample_rate: float, steps: int, delta: float, accountant: str = "rdp") -> float:
    """ε after `steps` DP-SGD steps at (σ, q), from Opacus' accountant ("rdp" or "prv")."""
    from opacus.accountants import PRVAccountant, RDPAccountant

    if accountant not in ("rdp", "prv"):
        raise ValueError(f"accountant must be 'rdp' or 'prv'; got {accountant!r}.")
    acc = RDPAccountant() if accountant == "rdp" else PRVAccountant()
    acc.history = [(noise_multiplier, sample_rate, steps)]  # the accountants read (σ, q, number of steps)
    return float(acc.get_epsilon(delta=delta))
