"""04.04's from-scratch pieces against diffusers 0.42 on a tiny random StableDiffusionPipeline (plumbing only):
cross-attention == diffusers' Attention (alone and inside a UNet2DConditionModel), the notebook's guided loop
== StableDiffusionPipeline (DDIM, PNDM and Euler schedulers, several guidance scales, negative prompts),
img2img's timesteps and begin index == StableDiffusionImg2ImgPipeline.get_timesteps, the whole img2img ==
the img2img pipeline, and the exercise solutions."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from diffusers import (DDIMScheduler, EulerDiscreteScheduler, PNDMScheduler, StableDiffusionImg2ImgPipeline,
                       StableDiffusionPipeline)
from diffusers.models.attention_processor import Attention

from utils.hub import model_path
from utils.notebooks import notebook_definitions

NOTEBOOK = Path(__file__).resolve().parents[2] / "04_images_multimodal" / "04_latent_diffusion_and_stable_diffusion.ipynb"
ns = notebook_definitions(NOTEBOOK, solutions=True)
SCHEDULERS = {"ddim": DDIMScheduler, "pndm": PNDMScheduler, "euler": EulerDiscreteScheduler}


@pytest.fixture(scope="module")
def tiny() -> StableDiffusionPipeline:
    pipe = StableDiffusionPipeline.from_pretrained(model_path("stable_diffusion", preset="smoke"))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def with_scheduler(pipe: StableDiffusionPipeline, name: str) -> StableDiffusionPipeline:
    """A copy of the pipeline's components with a fresh scheduler of this kind (same schedule config)."""
    return StableDiffusionPipeline(**{**pipe.components, "scheduler": SCHEDULERS[name].from_config(pipe.scheduler.config)})


def embeds(pipe: StableDiffusionPipeline, prompts: list[str]) -> torch.Tensor:
    return ns["encode_text"](pipe.tokenizer, pipe.text_encoder, prompts, pipe.tokenizer.model_max_length)


@pytest.mark.parametrize("query_dim,context_dim,heads,head_dim", [(16, 32, 2, 8), (24, 12, 3, 4), (8, 40, 1, 16)])
@pytest.mark.parametrize("seed", range(3))
def test_cross_attention_matches_diffusers_attention(query_dim: int, context_dim: int, heads: int, head_dim: int,
                                                     seed: int) -> None:
    torch.manual_seed(seed)
    theirs = Attention(query_dim=query_dim, cross_attention_dim=context_dim, heads=heads, dim_head=head_dim).eval()
    ours = ns["CrossAttention"](query_dim, context_dim, heads, head_dim)
    ours.load_state_dict(theirs.state_dict())  # strict: the parameter names and shapes must match diffusers'
    B, N, L = 2, int(torch.randint(1, 50, (1,))), int(torch.randint(1, 20, (1,)))
    x, context = torch.randn(B, N, query_dim), torch.randn(B, L, context_dim)
    with torch.no_grad():
        torch.testing.assert_close(ours(x, context), theirs(x, encoder_hidden_states=context), rtol=1e-5, atol=1e-5)


def test_cross_attention_matches_the_unets_attn2(tiny: StableDiffusionPipeline) -> None:
    blocks = [b for b in tiny.unet.modules() if type(b).__name__ == "BasicTransformerBlock"]
    assert blocks, "the tiny U-Net should have transformer blocks"
    context = embeds(tiny, ["a cat", "a dog on a mat"])
    for block in blocks:
        attn2 = block.attn2
        ours = ns["CrossAttention"](attn2.to_q.in_features, attn2.to_k.in_features, attn2.heads,
                                    attn2.to_q.out_features // attn2.heads)
        ours.load_state_dict(attn2.state_dict())
        x = torch.randn(2, 37, attn2.to_q.in_features)
        with torch.no_grad():
            torch.testing.assert_close(ours(x, context), attn2(x, encoder_hidden_states=context), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("scheduler", ["ddim", "pndm", "euler"])
@pytest.mark.parametrize("guidance_scale", [1.0, 2.0, 7.5])
def test_guided_loop_matches_pipeline(tiny: StableDiffusionPipeline, scheduler: str, guidance_scale: float) -> None:
    pipe = with_scheduler(tiny, scheduler)
    prompts = ["a red cube on a table", "an astronaut riding a horse"]
    z = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(7))  # what the pipeline draws, seed 7
    ours = ns["denoise"](pipe.unet, pipe.scheduler, z, embeds(pipe, prompts), embeds(pipe, ["", ""]),
                         guidance_scale, 8)
    theirs = pipe(prompts, guidance_scale=guidance_scale, num_inference_steps=8, output_type="latent",
                  generator=torch.Generator().manual_seed(7)).images
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)
    images = pipe(prompts, guidance_scale=guidance_scale, num_inference_steps=8, output_type="pt",
                  generator=torch.Generator().manual_seed(7)).images
    torch.testing.assert_close(ns["decode"](pipe.vae, ours) / 2 + 0.5, images, rtol=1e-4, atol=1e-5)


def test_guidance_scale_changes_the_result(tiny: StableDiffusionPipeline) -> None:
    pipe = with_scheduler(tiny, "ddim")
    z, cond, uncond = torch.randn(1, 4, 16, 16), embeds(pipe, ["a house"]), embeds(pipe, [""])
    low, high = (ns["denoise"](pipe.unet, pipe.scheduler, z, cond, uncond, w, 5) for w in (1.0, 7.5))
    assert (low - high).abs().max() > 1e-3


@pytest.mark.parametrize("scheduler", ["ddim", "euler"])
def test_negative_prompt_matches_pipeline(tiny: StableDiffusionPipeline, scheduler: str) -> None:
    pipe = with_scheduler(tiny, scheduler)
    z = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(3))
    ours = ns["denoise"](pipe.unet, pipe.scheduler, z, embeds(pipe, ["a bowl of fruit"]), embeds(pipe, ["blurry, dark"]),
                         5.0, 6)
    theirs = pipe("a bowl of fruit", negative_prompt="blurry, dark", guidance_scale=5.0, num_inference_steps=6,
                  output_type="latent", generator=torch.Generator().manual_seed(3)).images
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)
    plain = ns["denoise"](pipe.unet, pipe.scheduler, z, embeds(pipe, ["a bowl of fruit"]), embeds(pipe, [""]), 5.0, 6)
    assert (plain - ours).abs().max() > 1e-3, "a negative prompt should change the result"


@pytest.mark.parametrize("scheduler", ["ddim", "pndm", "euler"])
@pytest.mark.parametrize("steps", [7, 10, 25, 50])
@pytest.mark.parametrize("strength", [0.0, 0.1, 0.33, 0.5, 0.75, 0.99, 1.0])
def test_img2img_timesteps_match_pipeline(tiny: StableDiffusionPipeline, scheduler: str, steps: int,
                                          strength: float) -> None:
    ref = StableDiffusionImg2ImgPipeline(**with_scheduler(tiny, scheduler).components)
    ref.scheduler.set_timesteps(steps)
    expected, _ = ref.get_timesteps(steps, strength, "cpu")
    mine = SCHEDULERS[scheduler].from_config(tiny.scheduler.config)
    got = ns["img2img_timesteps"](mine, steps, strength)
    assert got.tolist() == expected.tolist()
    # where step-counting schedulers (Euler, PNDM) start counting; DDIM has no such state
    assert getattr(mine, "begin_index", None) == getattr(ref.scheduler, "begin_index", None)


@pytest.mark.parametrize("scheduler", ["ddim", "euler"])
@pytest.mark.parametrize("strength", [0.3, 0.75, 1.0])
def test_img2img_matches_pipeline(tiny: StableDiffusionPipeline, scheduler: str, strength: float) -> None:
    pipe = StableDiffusionImg2ImgPipeline(**with_scheduler(tiny, scheduler).components)
    image = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))  # [0, 1], as the pipeline takes
    prompts = ["a watercolour of a boat", "a boat"]
    ours = ns["img2img"](pipe.vae, pipe.unet, pipe.scheduler, image * 2 - 1, embeds(pipe, prompts),
                         embeds(pipe, ["", ""]), strength, 4.0, 10, torch.Generator().manual_seed(5))
    theirs = pipe(prompts, image=image, strength=strength, guidance_scale=4.0, num_inference_steps=10,
                  output_type="latent", generator=torch.Generator().manual_seed(5)).images
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("height,width,batch", [(32, 32, 1), (48, 16, 3), (64, 40, 2)])
def test_exercise_latent_shape(tiny: StableDiffusionPipeline, height: int, width: int, batch: int) -> None:
    drawn = tiny.prepare_latents(batch, tiny.unet.config.in_channels, height, width, torch.float32, "cpu", None)
    assert tuple(ns["latent_shape"](tiny, batch, height, width)) == tuple(drawn.shape)


@pytest.mark.parametrize("seed", range(3))
def test_exercise_attention_map(seed: int) -> None:
    torch.manual_seed(seed)
    attn = Attention(query_dim=16, cross_attention_dim=24, heads=4, dim_head=4).eval()
    ours = ns["CrossAttention"](16, 24, 4, 4)
    ours.load_state_dict(attn.state_dict())
    x, context = torch.randn(2, 9, 16), torch.randn(2, 5, 24)
    with torch.no_grad():
        got = ns["attention_map"](ours, x, context)
        scores = attn.get_attention_scores(attn.head_to_batch_dim(attn.to_q(x)), attn.head_to_batch_dim(attn.to_k(context)))
    torch.testing.assert_close(got, scores.reshape(2, 4, 9, 5), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got.sum(-1), torch.ones(2, 4, 9))  # each position's weights over the tokens sum to 1
