"""Diffusion from scratch: noise schedules, the forward process, the DDPM and DDIM steps, a small U-Net.

Introduced in 04_images_multimodal/03_diffusion_from_scratch.ipynb; 04.04 (latent diffusion) reuses it.
Every formula matches diffusers' DDPMScheduler / DDIMScheduler (tests/test_diffusion.py checks them).
Notation (Ho et al. 2020): beta_t the noise added at step t, alpha_t = 1 - beta_t,
abar_t = prod_{s<=t} alpha_s ("alphas_cumprod"); timesteps count 0 .. T-1 as in diffusers.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported inside the functions that need it (nothing happens at import time)
    import torch

SCHEDULES = ("linear", "cosine")
VARIANCE_TYPES = ("fixed_small", "fixed_large")


def make_betas(schedule: str, num_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02,
               max_beta: float = 0.999) -> "torch.Tensor":
    """The (num_steps,) betas of the 'linear' (DDPM) or 'cosine' (Nichol & Dhariwal) schedule, float32."""
    import torch

    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}; got {schedule!r}.")
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1; got {num_steps}.")
    if schedule == "linear":  # beta rises linearly from beta_start to beta_end
        return torch.linspace(beta_start, beta_end, num_steps, dtype=torch.float32)

    def abar(s: float) -> float:  # the cosine schedule defines abar(s), s in [0, 1]; offset 0.008 keeps beta_0 > 0
        return math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2

    # beta_t = 1 - abar((t+1)/T) / abar(t/T), capped at max_beta so the last step is not pure noise-division
    betas = [min(1 - abar((t + 1) / num_steps) / abar(t / num_steps), max_beta) for t in range(num_steps)]
    return torch.tensor(betas, dtype=torch.float32)


def alphas_cumprod(betas: "torch.Tensor") -> "torch.Tensor":
    """abar_t = prod_{s<=t} (1 - beta_s), shape (T,)."""
    import torch

    return torch.cumprod(1.0 - betas, dim=0)


def q_sample(x0: "torch.Tensor", t: "torch.Tensor", noise: "torch.Tensor", abar: "torch.Tensor") -> "torch.Tensor":
    """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise: a draw of q(x_t | x_0) in one step. x0 (B, ...), t (B,)."""
    a = abar.to(x0.device, x0.dtype)[t].reshape(-1, *([1] * (x0.dim() - 1)))  # (B, 1, 1, 1) broadcasts
    return a.sqrt() * x0 + (1 - a).sqrt() * noise


def _abar_at(abar: "torch.Tensor", t: int, final: float = 1.0) -> "torch.Tensor":
    """abar_t, and 1 (or `final`) for t < 0: 'before the first step' there is no noise."""
    import torch

    return abar[t] if t >= 0 else torch.tensor(final, dtype=abar.dtype)


def ddpm_step(eps: "torch.Tensor", t: int, x_t: "torch.Tensor", abar: "torch.Tensor", noise: "torch.Tensor",
              *, t_prev: int | None = None, variance_type: str = "fixed_small",
              clip: bool = True) -> tuple["torch.Tensor", "torch.Tensor"]:
    """One ancestral step x_t -> x_{t_prev} (default t-1) from predicted noise eps: (x_prev, x0_hat)."""
    if variance_type not in VARIANCE_TYPES:
        raise ValueError(f"variance_type must be one of {VARIANCE_TYPES}; got {variance_type!r}.")
    t_prev = t - 1 if t_prev is None else t_prev
    a_t, a_prev = abar[t], _abar_at(abar, t_prev)
    alpha_t = a_t / a_prev          # the alpha of this (possibly strided) step
    beta_t = 1 - alpha_t
    x0_hat = (x_t - (1 - a_t).sqrt() * eps) / a_t.sqrt()  # invert q_sample
    if clip:
        x0_hat = x0_hat.clamp(-1, 1)  # the data lives in [-1, 1]
    # the mean of the posterior q(x_{t-1} | x_t, x0) at x0 = x0_hat (Ho et al. eq. 7)
    mean = (a_prev.sqrt() * beta_t / (1 - a_t)) * x0_hat + (alpha_t.sqrt() * (1 - a_prev) / (1 - a_t)) * x_t
    if t == 0:
        return mean, x0_hat  # the last step adds no noise
    # fixed_small: the posterior variance beta~_t; fixed_large: beta_t (both in Ho et al. section 3.2)
    variance = (1 - a_prev) / (1 - a_t) * beta_t if variance_type == "fixed_small" else beta_t
    return mean + variance.clamp(min=1e-20).sqrt() * noise, x0_hat


def ddim_timesteps(num_train_steps: int, num_inference_steps: int) -> list[int]:
    """The timesteps DDIM visits, high to low, evenly strided ('leading' spacing): [..., 2k, k, 0]."""
    if not 1 <= num_inference_steps <= num_train_steps:
        raise ValueError(f"num_inference_steps must be in 1..{num_train_steps}; got {num_inference_steps}.")
    stride = num_train_steps // num_inference_steps
    return [i * stride for i in reversed(range(num_inference_steps))]


def ddim_step(eps: "torch.Tensor", t: int, t_prev: int, x_t: "torch.Tensor", abar: "torch.Tensor", *,
              eta: float = 0.0, noise: "torch.Tensor | None" = None, clip: bool = True,
              clipped_eps: bool = False) -> tuple["torch.Tensor", "torch.Tensor"]:
    """One DDIM step x_t -> x_{t_prev} (Song et al. eq. 12): deterministic at eta=0, DDPM-like at eta=1.

    clipped_eps=True re-derives eps from the clipped x0_hat before the direction term, so that x0_hat and eps
    describe the same x_t again (== DDIMScheduler.step(..., use_clipped_model_output=True)). Off by default, as in
    diffusers; with clip=True on pixels, 04.03 measured DDIM much closer to the data with it on.
    """
    if eta < 0:
        raise ValueError(f"eta must be >= 0; got {eta}.")
    if eta > 0 and noise is None:
        raise ValueError("eta > 0 adds noise: pass noise= (a tensor shaped like x_t).")
    a_t, a_prev = abar[t], _abar_at(abar, t_prev)
    x0_hat = (x_t - (1 - a_t).sqrt() * eps) / a_t.sqrt()
    if clip:
        x0_hat = x0_hat.clamp(-1, 1)
    if clipped_eps:  # invert x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps at the clipped x0_hat
        eps = (x_t - a_t.sqrt() * x0_hat) / (1 - a_t).sqrt()
    # sigma_t(eta) = eta * sqrt(beta~): the posterior std of the strided step, scaled by eta (eq. 16)
    sigma = eta * ((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)).sqrt()
    direction = (1 - a_prev - sigma**2).sqrt() * eps  # "the direction pointing to x_t"
    x_prev = a_prev.sqrt() * x0_hat + direction
    if eta > 0:
        x_prev = x_prev + sigma * noise
    return x_prev, x0_hat


def timestep_embedding(t: "torch.Tensor", dim: int) -> "torch.Tensor":
    """Sinusoidal features of the timesteps t (B,) -> (B, dim), as a transformer's positions."""
    import torch

    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, device=t.device) / half)  # (half,)
    angles = t.float()[:, None] * freqs[None, :]                                        # (B, half)
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def _res_block(in_ch: int, out_ch: int, emb_dim: int) -> "torch.nn.Module":
    """A residual block whose features are scaled and shifted by the (time + class) embedding (FiLM)."""
    from torch import nn

    class ResBlock(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.norm1, self.conv1 = nn.GroupNorm(8, in_ch), nn.Conv2d(in_ch, out_ch, 3, padding=1)
            # a per-channel scale and shift saying "how noisy, which class", applied AFTER the norm: a shift
            # before a GroupNorm is partly removed by it (entirely when a group holds one channel)
            self.emb = nn.Linear(emb_dim, 2 * out_ch)
            self.norm2, self.conv2 = nn.GroupNorm(8, out_ch), nn.Conv2d(out_ch, out_ch, 3, padding=1)
            self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

        def forward(self, x, emb):  # x (B, in_ch, H, W), emb (B, emb_dim)
            h = self.conv1(nn.functional.silu(self.norm1(x)))
            scale, shift = self.emb(emb)[:, :, None, None].chunk(2, dim=1)  # (B, out_ch, 1, 1) each
            h = self.conv2(nn.functional.silu(self.norm2(h) * (1 + scale) + shift))
            return h + self.skip(x)  # (B, out_ch, H, W)

    return ResBlock()


def make_unet(channels: tuple[int, ...] = (32, 64), num_classes: int = 0, in_channels: int = 1,
              emb_dim: int = 128) -> "torch.nn.Module":
    """A small U-Net eps_theta(x, t, y): one ResBlock per level, stride-2 downs, nearest-neighbour ups.

    Image sides must be divisible by 2 ** (len(channels) - 1). With num_classes > 0 it takes class labels y,
    and label `num_classes` means "no label" (the null class that classifier-free guidance needs).
    """
    import torch
    from torch import nn

    if not channels or any(c % 8 for c in channels):
        raise ValueError(f"channels must be a non-empty tuple of multiples of 8 (GroupNorm(8)); got {channels}.")

    class UNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.num_classes, self.emb_dim = num_classes, emb_dim
            self.time_mlp = nn.Sequential(nn.Linear(emb_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
            self.class_emb = nn.Embedding(num_classes + 1, emb_dim) if num_classes else None
            self.conv_in = nn.Conv2d(in_channels, channels[0], 3, padding=1)
            self.down = nn.ModuleList(_res_block(channels[max(i - 1, 0)], c, emb_dim) for i, c in enumerate(channels))
            self.downsample = nn.ModuleList(nn.Conv2d(c, c, 3, stride=2, padding=1) for c in channels[:-1])
            self.mid = _res_block(channels[-1], channels[-1], emb_dim)
            self.up = nn.ModuleList(_res_block(2 * c, channels[max(i - 1, 0)], emb_dim)
                                    for i, c in reversed(list(enumerate(channels))))
            self.out = nn.Sequential(nn.GroupNorm(8, channels[0]), nn.SiLU(), nn.Conv2d(channels[0], in_channels, 3, padding=1))

        def forward(self, x, t, y=None):  # x (B, C, H, W), t (B,) ints, y (B,) ints or None -> eps (B, C, H, W)
            emb = self.time_mlp(timestep_embedding(t, self.emb_dim))           # (B, emb_dim)
            if self.class_emb is not None:
                y = torch.full_like(t, self.num_classes) if y is None else y   # no label = the null class
                emb = emb + self.class_emb(y)
            h, skips = self.conv_in(x), []
            for i, block in enumerate(self.down):
                h = block(h, emb)
                skips.append(h)  # saved for the matching up level
                if i < len(self.downsample):
                    h = self.downsample[i](h)  # halve H and W
            h = self.mid(h, emb)
            for i, block in enumerate(self.up):
                if i > 0:
                    h = nn.functional.interpolate(h, scale_factor=2, mode="nearest")  # double H and W
                h = block(torch.cat([h, skips.pop()], dim=1), emb)
            return self.out(h)

    return UNet()


def guided_eps(model: "torch.nn.Module", x: "torch.Tensor", t: "torch.Tensor", y: "torch.Tensor",
               guidance_scale: float) -> "torch.Tensor":
    """Classifier-free guidance: eps_uncond + w (eps_cond - eps_uncond), both in one batch of 2B."""
    import torch

    if guidance_scale == 1.0:
        return model(x, t, y)  # w = 1 is plain conditional sampling
    null = torch.full_like(y, model.num_classes)
    eps = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([null, y]))  # (2B, C, H, W)
    eps_uncond, eps_cond = eps.chunk(2)
    return eps_uncond + guidance_scale * (eps_cond - eps_uncond)


def sample(model: "torch.nn.Module", shape: tuple[int, ...], abar: "torch.Tensor", *, steps: int | None = None,
           eta: float = 0.0, y: "torch.Tensor | None" = None, guidance_scale: float = 1.0,
           generator: "torch.Generator | None" = None, clipped_eps: bool = False) -> "torch.Tensor":
    """Images from pure noise: DDPM through all T steps (steps=None), else DDIM with `steps` steps and `eta`.

    clipped_eps is passed to every DDIM step (see ddim_step); DDPM ignores it.
    """
    import torch

    T = len(abar)
    device = next(model.parameters()).device
    x = torch.randn(shape, generator=generator).to(device)  # x_T ~ N(0, I)
    timesteps = list(range(T - 1, -1, -1)) if steps is None else ddim_timesteps(T, steps)
    with torch.no_grad():
        for i, t in enumerate(timesteps):
            t_batch = torch.full((shape[0],), t, device=device, dtype=torch.long)
            eps = model(x, t_batch) if y is None else guided_eps(model, x, t_batch, y, guidance_scale)
            noise = torch.randn(shape, generator=generator).to(device)
            if steps is None:
                x, _ = ddpm_step(eps, t, x, abar, noise)
            else:
                t_prev = timesteps[i + 1] if i + 1 < len(timesteps) else -1
                x, _ = ddim_step(eps, t, t_prev, x, abar, eta=eta, noise=noise, clipped_eps=clipped_eps)
    return x
