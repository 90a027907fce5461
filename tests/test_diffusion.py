"""utils.diffusion against diffusers 0.42: schedules, q(x_t | x_0), DDPM and DDIM steps, and the U-Net/CFG contract."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler

from utils import diffusion as D

HF_SCHEDULE = {"linear": "linear", "cosine": "squaredcos_cap_v2"}


@pytest.mark.parametrize("schedule", D.SCHEDULES)
@pytest.mark.parametrize("T", [10, 200, 1000])
def test_betas_and_alphas_cumprod_match_diffusers(schedule: str, T: int) -> None:
    ours = D.make_betas(schedule, T)
    hf = DDPMScheduler(num_train_timesteps=T, beta_schedule=HF_SCHEDULE[schedule])
    torch.testing.assert_close(ours, hf.betas, rtol=0, atol=1e-7)
    torch.testing.assert_close(D.alphas_cumprod(ours), hf.alphas_cumprod, rtol=1e-6, atol=1e-7)


def test_q_sample_matches_add_noise_and_the_iterated_chain() -> None:
    gen = torch.Generator().manual_seed(0)
    betas = D.make_betas("linear", 1000)
    abar = D.alphas_cumprod(betas)
    x0, noise = torch.rand(5, 1, 8, 8, generator=gen) * 2 - 1, torch.randn(5, 1, 8, 8, generator=gen)
    t = torch.tensor([0, 10, 250, 600, 999])
    torch.testing.assert_close(D.q_sample(x0, t, noise, abar), DDPMScheduler().add_noise(x0, noise, t))
    # the chain x_t = sqrt(1-b_t) x_{t-1} + sqrt(b_t) z, run many times, has the closed form's mean and variance
    x = x0[1:2].expand(20000, -1, -1, -1).double()
    for s in range(101):
        x = (1 - betas[s]).sqrt() * x + betas[s].sqrt() * torch.randn(x.shape, generator=gen, dtype=x.dtype)
    mean, var = abar[100].sqrt() * x0[1:2], 1 - abar[100]
    assert (x.mean(0) - mean).abs().max() < 0.05
    assert (x.var(0) - var).abs().max() < 0.01


@pytest.mark.parametrize("variance_type", D.VARIANCE_TYPES)
@pytest.mark.parametrize("schedule", D.SCHEDULES)
@pytest.mark.parametrize("clip", [True, False])
def test_ddpm_step_matches_diffusers(variance_type: str, schedule: str, clip: bool) -> None:
    hf = DDPMScheduler(beta_schedule=HF_SCHEDULE[schedule], variance_type=variance_type, clip_sample=clip)
    abar = D.alphas_cumprod(D.make_betas(schedule, 1000))
    for t in [999, 500, 37, 1, 0]:
        gen = torch.Generator().manual_seed(t)
        x_t, eps = torch.randn(3, 1, 8, 8, generator=gen) * 1.5, torch.randn(3, 1, 8, 8, generator=gen)
        out = hf.step(eps, t, x_t, generator=torch.Generator().manual_seed(1))
        noise = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(1))  # the draw hf.step makes
        x_prev, x0_hat = D.ddpm_step(eps, t, x_t, abar, noise, variance_type=variance_type, clip=clip)
        torch.testing.assert_close(x0_hat, out.pred_original_sample, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(x_prev, out.prev_sample, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("steps", [1, 10, 25, 50, 1000])
def test_ddim_timesteps_match_diffusers(steps: int) -> None:
    hf = DDIMScheduler()
    hf.set_timesteps(steps)
    assert D.ddim_timesteps(1000, steps) == hf.timesteps.tolist()


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("schedule", D.SCHEDULES)
def test_ddim_step_matches_diffusers(eta: float, schedule: str) -> None:
    hf = DDIMScheduler(beta_schedule=HF_SCHEDULE[schedule])
    hf.set_timesteps(10)
    abar = D.alphas_cumprod(D.make_betas(schedule, 1000))
    timesteps = D.ddim_timesteps(1000, 10)
    gen = torch.Generator().manual_seed(0)
    for i, t in enumerate(timesteps):
        t_prev = timesteps[i + 1] if i + 1 < len(timesteps) else -1
        x_t, eps, noise = (torch.randn(2, 1, 8, 8, generator=gen) for _ in range(3))
        out = hf.step(eps, t, x_t, eta=eta, variance_noise=noise)
        x_prev, x0_hat = D.ddim_step(eps, t, t_prev, x_t, abar, eta=eta, noise=noise)
        torch.testing.assert_close(x0_hat, out.pred_original_sample, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(x_prev, out.prev_sample, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_ddim_step_with_clipped_eps_matches_use_clipped_model_output(eta: float) -> None:
    hf = DDIMScheduler(num_train_timesteps=250, beta_schedule="squaredcos_cap_v2")
    hf.set_timesteps(10)
    abar = D.alphas_cumprod(D.make_betas("cosine", 250))
    timesteps = D.ddim_timesteps(250, 10)
    gen = torch.Generator().manual_seed(1)
    for i, t in enumerate(timesteps):
        t_prev = timesteps[i + 1] if i + 1 < len(timesteps) else -1
        x_t, eps, noise = (2 * torch.randn(2, 1, 8, 8, generator=gen) for _ in range(3))  # wide: x0_hat gets clipped
        out = hf.step(eps, t, x_t, eta=eta, variance_noise=noise, use_clipped_model_output=True)
        x_prev, x0_hat = D.ddim_step(eps, t, t_prev, x_t, abar, eta=eta, noise=noise, clipped_eps=True)
        torch.testing.assert_close(x0_hat, out.pred_original_sample, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(x_prev, out.prev_sample, rtol=1e-4, atol=1e-4)
        # the keyword must matter wherever clipping happened (else this test could not fail)
        if x0_hat.abs().eq(1).any() and t_prev >= 0:
            plain, _ = D.ddim_step(eps, t, t_prev, x_t, abar, eta=eta, noise=noise)
            assert not torch.allclose(plain, x_prev, atol=1e-3)


def test_sample_passes_clipped_eps_to_ddim_only() -> None:
    torch.manual_seed(0)
    model = D.make_unet((16,))
    abar = D.alphas_cumprod(D.make_betas("cosine", 20))
    run = lambda **kw: D.sample(model, (4, 1, 8, 8), abar, generator=torch.Generator().manual_seed(3), **kw)  # noqa: E731
    assert not torch.allclose(run(steps=5), run(steps=5, clipped_eps=True))  # an untrained net's x0_hat gets clipped
    torch.testing.assert_close(run(), run(clipped_eps=True))  # DDPM's step has no direction term


def test_bad_arguments_say_what_is_allowed() -> None:
    with pytest.raises(ValueError, match="schedule"):
        D.make_betas("quadratic")
    with pytest.raises(ValueError, match="variance_type"):
        D.ddpm_step(torch.zeros(1), 5, torch.zeros(1), torch.ones(10) * 0.5, torch.zeros(1), variance_type="learned")
    with pytest.raises(ValueError, match="num_inference_steps"):
        D.ddim_timesteps(100, 200)
    with pytest.raises(ValueError, match="noise"):
        D.ddim_step(torch.zeros(1), 5, 3, torch.zeros(1), torch.ones(10) * 0.5, eta=1.0)
    with pytest.raises(ValueError, match="channels"):
        D.make_unet(channels=(30,))


@pytest.mark.parametrize("side,channels", [(8, (8,)), (8, (16, 32)), (28, (16, 32, 32))])
def test_unet_shapes_and_the_null_class(side: int, channels: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    model = D.make_unet(channels, num_classes=10)
    x, t = torch.randn(4, 1, side, side), torch.tensor([0, 5, 500, 999])
    assert model(x, t, torch.tensor([1, 2, 3, 4])).shape == x.shape
    # no label is the null class, and the label changes the output
    torch.testing.assert_close(model(x, t), model(x, t, torch.full((4,), 10)))
    # the label must really change the output (a shift before GroupNorm with one channel per group is erased)
    zeros, ones = torch.zeros(4, dtype=torch.long), torch.ones(4, dtype=torch.long)
    assert (model(x, t, zeros) - model(x, t, ones)).abs().max() > 1e-3


def test_guided_eps_is_the_cfg_combination() -> None:
    torch.manual_seed(0)
    model = D.make_unet((16,), num_classes=3)
    x, t, y = torch.randn(2, 1, 8, 8), torch.tensor([3, 900]), torch.tensor([0, 2])
    cond, uncond = model(x, t, y), model(x, t)
    torch.testing.assert_close(D.guided_eps(model, x, t, y, 1.0), cond)
    torch.testing.assert_close(D.guided_eps(model, x, t, y, 0.0), uncond, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(D.guided_eps(model, x, t, y, 3.0), uncond + 3 * (cond - uncond), rtol=1e-5, atol=1e-5)


def test_sample_runs_ddpm_and_ddim_reproducibly() -> None:
    torch.manual_seed(0)
    model = D.make_unet((16,))
    abar = D.alphas_cumprod(D.make_betas("linear", 20))
    a = D.sample(model, (2, 1, 8, 8), abar, generator=torch.Generator().manual_seed(3))
    b = D.sample(model, (2, 1, 8, 8), abar, generator=torch.Generator().manual_seed(3))
    c = D.sample(model, (2, 1, 8, 8), abar, steps=5, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b)
    assert a.shape == c.shape == (2, 1, 8, 8) and a.abs().max() <= 1.5 and not torch.allclose(a, c)
