"""04.03's from-scratch diffusion against diffusers 0.42 and against utils.diffusion, on random inputs:
schedules (linear, cosine == squaredcos_cap_v2), q_sample == add_noise, ddpm_step == DDPMScheduler.step
(both variance types, clipping on/off), DDIM timesteps and ddim_step == DDIMScheduler.step (eta 0..1),
classifier-free guidance, the notebook's sampler == utils.diffusion.sample, and the exercise solutions."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler

from utils import diffusion as D
from utils.notebooks import notebook_definitions

NOTEBOOK = Path(__file__).resolve().parents[2] / "04_images_multimodal" / "03_diffusion_from_scratch.ipynb"
ns = notebook_definitions(NOTEBOOK, solutions=True)
HF = {"linear": ("linear_betas", "linear"), "cosine": ("cosine_betas", "squaredcos_cap_v2")}


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
@pytest.mark.parametrize("T", [7, 100, 250, 1000, 4000])
def test_schedules_match_diffusers_and_utils(schedule: str, T: int) -> None:
    fn, hf_name = HF[schedule]
    betas = ns[fn](T)
    hf = DDPMScheduler(num_train_timesteps=T, beta_schedule=hf_name)
    torch.testing.assert_close(betas, hf.betas, rtol=0, atol=1e-7)
    torch.testing.assert_close(torch.cumprod(1 - betas, 0), hf.alphas_cumprod, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(betas, D.make_betas(schedule, T), rtol=0, atol=1e-7)


@pytest.mark.parametrize("seed", range(5))
def test_q_sample_matches_add_noise(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    hf = DDPMScheduler(beta_schedule="squaredcos_cap_v2")
    B, side = int(torch.randint(1, 9, (1,), generator=gen)), int(torch.randint(2, 17, (1,), generator=gen))
    x0, noise = torch.randn(B, 1, side, side, generator=gen), torch.randn(B, 1, side, side, generator=gen)
    t = torch.randint(0, 1000, (B,), generator=gen)
    torch.testing.assert_close(ns["q_sample"](x0, t, noise, hf.alphas_cumprod), hf.add_noise(x0, noise, t))


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_large"])
@pytest.mark.parametrize("clip", [True, False])
def test_ddpm_step_matches_diffusers(schedule: str, variance_type: str, clip: bool) -> None:
    hf = DDPMScheduler(num_train_timesteps=500, beta_schedule=HF[schedule][1], variance_type=variance_type,
                       clip_sample=clip)
    gen = torch.Generator().manual_seed(0)
    for t in [499, 321, 100, 2, 1, 0]:
        x_t, eps = 2 * torch.randn(3, 2, 5, 5, generator=gen), torch.randn(3, 2, 5, 5, generator=gen)
        out = hf.step(eps, t, x_t, generator=torch.Generator().manual_seed(t))
        z = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(t))
        x_prev, x0_hat = ns["ddpm_step"](eps, t, x_t, hf.alphas_cumprod, z, variance_type, clip)
        torch.testing.assert_close(x_prev, out.prev_sample, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(x0_hat, out.pred_original_sample, rtol=1e-5, atol=1e-5)
        ours_utils = D.ddpm_step(eps, t, x_t, hf.alphas_cumprod, z, variance_type=variance_type, clip=clip)
        torch.testing.assert_close(x_prev, ours_utils[0], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("T,steps", [(1000, 10), (1000, 25), (1000, 50), (250, 10), (250, 50), (100, 100)])
def test_ddim_timesteps_match_diffusers(T: int, steps: int) -> None:
    hf = DDIMScheduler(num_train_timesteps=T)
    hf.set_timesteps(steps)
    assert ns["ddim_timesteps"](T, steps) == hf.timesteps.tolist() == D.ddim_timesteps(T, steps)


@pytest.mark.parametrize("eta", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("schedule", ["linear", "cosine"])
@pytest.mark.parametrize("clip", [True, False])
def test_ddim_step_matches_diffusers(eta: float, schedule: str, clip: bool) -> None:
    hf = DDIMScheduler(beta_schedule=HF[schedule][1], clip_sample=clip)
    hf.set_timesteps(25)
    ts = ns["ddim_timesteps"](1000, 25)
    gen = torch.Generator().manual_seed(1)
    for i, t in enumerate(ts):
        t_prev = ts[i + 1] if i + 1 < len(ts) else -1
        x_t, eps, z = (torch.randn(2, 3, 4, 4, generator=gen) for _ in range(3))
        out = hf.step(eps, t, x_t, eta=eta, variance_noise=z)
        x_prev, x0_hat = ns["ddim_step"](eps, t, t_prev, x_t, hf.alphas_cumprod, eta, z, clip)
        torch.testing.assert_close(x_prev, out.prev_sample, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(x0_hat, out.pred_original_sample, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("w", [0.0, 1.0, 2.5, 7.5])
def test_guidance_matches_utils_and_the_formula(w: float) -> None:
    torch.manual_seed(0)
    model = D.make_unet((8,), num_classes=10, emb_dim=16)
    x, t, y = torch.randn(3, 1, 8, 8), torch.tensor([0, 40, 999]), torch.tensor([3, 9, 0])
    with torch.no_grad():
        ours = ns["guided_eps"](model, x, t, y, w)
        uncond, cond = model(x, t), model(x, t, y)
    torch.testing.assert_close(ours, uncond + w * (cond - uncond), rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(ours, D.guided_eps(model, x, t, y, w), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_step_with_clipped_eps_matches_use_clipped_model_output(eta: float) -> None:
    hf = DDIMScheduler(num_train_timesteps=250, beta_schedule="squaredcos_cap_v2")
    hf.set_timesteps(10)
    ts = ns["ddim_timesteps"](250, 10)
    gen = torch.Generator().manual_seed(2)
    changed = 0
    for i, t in enumerate(ts):
        t_prev = ts[i + 1] if i + 1 < len(ts) else -1
        x_t, eps, z = (2 * torch.randn(2, 1, 8, 8, generator=gen) for _ in range(3))  # wide: x0_hat gets clipped
        out = hf.step(eps, t, x_t, eta=eta, variance_noise=z, use_clipped_model_output=True)
        x_prev, x0_hat = ns["ddim_step"](eps, t, t_prev, x_t, hf.alphas_cumprod, eta, z, clipped_eps=True)
        torch.testing.assert_close(x_prev, out.prev_sample, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(x0_hat, out.pred_original_sample, rtol=1e-5, atol=1e-5)
        plain, _ = ns["ddim_step"](eps, t, t_prev, x_t, hf.alphas_cumprod, eta, z)
        changed += not torch.allclose(plain, x_prev, atol=1e-3)
    assert changed >= 5, "the fix must change the step wherever x0_hat was clipped"


@pytest.mark.parametrize("steps,labels,clipped_eps", [(None, False, False), (5, False, False), (5, True, False),
                                                      (5, True, True), (5, False, True)])
def test_notebook_sampler_equals_utils_sample(steps: int | None, labels: bool, clipped_eps: bool) -> None:
    torch.manual_seed(0)
    model = D.make_unet((8, 16), num_classes=10, emb_dim=16).eval()
    abar = D.alphas_cumprod(D.make_betas("cosine", 30))
    ns.update(T=30, C=1, H=8, W=8, device=torch.device("cpu"), abar=abar)  # the notebook's globals
    y = torch.tensor([1, 7]) if labels else None
    ours = ns["sample"](model, 2, steps=steps, y=y, w=2.0, generator=torch.Generator().manual_seed(5),
                        clipped_eps=clipped_eps)
    ref = D.sample(model, (2, 1, 8, 8), abar, steps=steps, y=y, guidance_scale=2.0,
                   generator=torch.Generator().manual_seed(5), clipped_eps=clipped_eps)
    torch.testing.assert_close(ours, ref)


def test_exercise_solutions_match_diffusers() -> None:
    hf = DDPMScheduler(beta_schedule="squaredcos_cap_v2", clip_sample=False)  # the posterior at the true x0
    gen = torch.Generator().manual_seed(0)
    x0, noise, t = torch.randn(4, 1, 6, 6, generator=gen), torch.randn(4, 1, 6, 6, generator=gen), torch.tensor([0, 9, 500, 999])
    torch.testing.assert_close(ns["v_target"](x0, noise, t, hf.alphas_cumprod), hf.get_velocity(x0, noise, t))
    for step in [1, 10, 600, 999]:
        x_t = torch.randn(2, 1, 6, 6, generator=gen)
        mean, variance = ns["posterior"](x0[:2], x_t, step, hf.alphas_cumprod)
        torch.testing.assert_close(variance, hf._get_variance(step), rtol=1e-5, atol=1e-8)
        a = hf.alphas_cumprod[step]
        true_eps = (x_t - a.sqrt() * x0[:2]) / (1 - a).sqrt()
        hf_step = hf.step(true_eps, step, x_t, generator=torch.Generator().manual_seed(0))
        z = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(mean, hf_step.prev_sample - variance.sqrt() * z, rtol=1e-4, atol=1e-4)


def test_an_unfinished_diversity_fails_its_self_check_with_the_hint() -> None:
    # The student release stubs `diversity` as `raise NotImplementedError(hint)`: the check must say so kindly.
    from types import SimpleNamespace

    from utils.checks import CheckFailed, check_equal
    from utils.notebooks import cell_tags, read_notebook
    from utils.student import stub_solution

    cells = read_notebook(NOTEBOOK).cells
    i = next(i for i, c in enumerate(cells) if "solution" in cell_tags(c) and "def diversity(" in c.source)
    namespace = {"CheckFailed": CheckFailed, "check_equal": check_equal, "cfg": SimpleNamespace(n_per_digit=2)}
    exec(stub_solution(cells[i].source, "diversity"), namespace)
    with pytest.raises(CheckFailed, match="diversity is not written yet") as failure:
        exec(cells[i + 1].source, namespace)
    assert "repeat_interleave(n_per_digit)" in str(failure.value)
