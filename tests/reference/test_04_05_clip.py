"""04.05's from-scratch contrastive loss against transformers' CLIPModel, on random tiny models and inputs:
`clip_loss` (symmetric InfoNCE) == CLIPModel(return_loss=True).loss, with the same gradient for every parameter
of the model and for logit_scale; Exercise 1's `clip_logits` == CLIPModel's logits_per_image / logits_per_text;
and the notebook's TinyCLIP returns that loss on its own embeddings."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from utils.notebooks import notebook_definitions

NOTEBOOK = Path(__file__).resolve().parents[2] / "04_images_multimodal" / "05_clip_and_multimodal.ipynb"
ns = notebook_definitions(NOTEBOOK, solutions=True)
BOS, EOS = 98, 99  # the tiny text tower pools at the end-of-text token


def tiny_clip(seed: int, projection_dim: int = 16):
    """A random CLIPModel small enough to run in milliseconds, with a logit scale that is not its initial one."""
    from transformers import CLIPConfig, CLIPModel

    config = CLIPConfig(
        text_config=dict(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=16, bos_token_id=BOS, eos_token_id=EOS),
        vision_config=dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64,
                           num_hidden_layers=2, num_attention_heads=2),
        projection_dim=projection_dim)
    torch.manual_seed(seed)
    model = CLIPModel(config)
    with torch.no_grad():
        model.logit_scale.fill_(float(torch.empty(()).uniform_(0.0, 4.0)))
    return model


def random_batch(seed: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    pixels = torch.randn(n, 3, 32, 32, generator=gen)
    ids = torch.randint(1, BOS, (n, int(torch.randint(2, 16, (1,), generator=gen))), generator=gen)
    ids[:, -1] = EOS
    return pixels, ids


@pytest.mark.parametrize("seed,n", [(0, 1), (1, 2), (2, 5), (3, 8), (4, 13)])
def test_clip_loss_equals_clipmodel_loss_and_gradients(seed: int, n: int):
    model = tiny_clip(seed, projection_dim=8 + seed)
    pixels, ids = random_batch(seed, n)

    theirs = model(input_ids=ids, pixel_values=pixels, return_loss=True).loss
    theirs.backward()
    their_grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()

    image = model.get_image_features(pixel_values=pixels).pooler_output  # (n, d), not normalised
    text = model.get_text_features(input_ids=ids).pooler_output
    ours = ns["clip_loss"](image, text, model.logit_scale)
    ours.backward()

    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    assert "logit_scale" in their_grads and len(their_grads) > 20
    for name, grad in their_grads.items():
        torch.testing.assert_close(dict(model.named_parameters())[name].grad, grad, rtol=1e-4, atol=1e-6,
                                   msg=lambda m, name=name: f"gradient of {name}: {m}")


def test_clip_loss_equals_the_library_function_on_raw_embeddings():
    from transformers.models.clip.modeling_clip import image_text_contrastive_loss

    gen = torch.Generator().manual_seed(7)
    for n, d in [(1, 3), (4, 16), (31, 5)]:
        image, text = torch.randn(n, d, generator=gen) * 3, torch.randn(n, d, generator=gen)
        scale = torch.tensor(math.log(1 / 0.07))
        u, v = image / image.norm(dim=-1, keepdim=True), text / text.norm(dim=-1, keepdim=True)
        expected = image_text_contrastive_loss(scale.exp() * v @ u.T)  # logits_per_text, as CLIPModel passes it
        torch.testing.assert_close(ns["clip_loss"](image, text, scale), expected, rtol=1e-5, atol=1e-6)


def test_clip_loss_is_log_n_when_every_pair_looks_alike():
    """All embeddings equal: every caption is as likely as any other, so each cross-entropy is log N."""
    for n in (1, 2, 10):
        same = torch.ones(n, 4)
        torch.testing.assert_close(ns["clip_loss"](same, same, torch.tensor(2.0)), torch.tensor(math.log(n)))


@pytest.mark.parametrize("seed,n_img,n_txt", [(0, 1, 3), (1, 4, 4), (2, 6, 2)])
def test_exercise_clip_logits_equal_clipmodel(seed: int, n_img: int, n_txt: int):
    model = tiny_clip(seed).eval()
    pixels, _ = random_batch(seed, n_img)
    _, ids = random_batch(seed + 100, n_txt)
    with torch.no_grad():
        out = model(input_ids=ids, pixel_values=pixels)
        image = model.get_image_features(pixel_values=pixels).pooler_output
        text = model.get_text_features(input_ids=ids).pooler_output
        per_image, per_text = ns["clip_logits"](image, text, model.logit_scale)
    torch.testing.assert_close(per_image, out.logits_per_image, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(per_text, out.logits_per_text, rtol=1e-5, atol=1e-5)


def test_tiny_clip_returns_the_contrastive_loss_of_its_embeddings():
    torch.manual_seed(0)
    model = ns["TinyCLIP"](vocab_size=20, d_hidden=16, d_embed=8)
    x, idx = torch.rand(5, 8, 8), torch.randint(0, 21, (5, 6))
    (image, text), loss = model(x, idx)
    assert image.shape == (5, 8) and text.shape == (5, 8)
    torch.testing.assert_close(loss, ns["clip_loss"](image, text, model.logit_scale))
    with torch.no_grad():
        model.logit_scale.fill_(10.0)  # s = e^10 would be 22,026: clamped at 100, as CLIP does
    _, clamped = model(x, idx)
    torch.testing.assert_close(clamped, ns["clip_loss"](image, text, torch.tensor(math.log(100))))


@pytest.mark.parametrize("seed,batch,prompt_len", [(0, 1, 1), (1, 3, 5), (2, 6, 9)])
def test_vlm_next_token_logits_with_the_cached_prompt_equal_one_full_forward(seed: int, batch: int, prompt_len: int):
    """The notebook's KV-cache shortcut (prompt once, repeated for the batch; only the image token runs with
    gradients) gives the logits AND projector gradients of an ordinary forward over [prompt embeds, image token]."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    llm = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                       num_attention_heads=4, num_key_value_heads=2)).eval().requires_grad_(False)
    prompt = torch.randint(0, 64, (1, prompt_len))
    ns.update(llm=llm, vlm_prompt=prompt, device=torch.device("cpu"))  # the notebook's globals the function reads
    projector = ns["Projector"](8, 32, llm.get_input_embeddings().weight.mean(0))
    with torch.no_grad():
        projector.linear.weight.normal_()  # not the small start, so the image token matters
    image_embeds = torch.randn(batch, 8)

    cached = ns["next_token_logits"](projector, image_embeds)
    cached.square().sum().backward()
    cached_grad = projector.linear.weight.grad.clone()
    projector.zero_grad()

    whole = torch.cat([llm.get_input_embeddings()(prompt).expand(batch, -1, -1), projector(image_embeds)[:, None]], 1)
    direct = llm(inputs_embeds=whole).logits[:, -1]
    direct.square().sum().backward()
    assert cached.shape == (batch, 64)
    torch.testing.assert_close(cached, direct, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(cached_grad, projector.linear.weight.grad, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("function", ["shuffled_caption_accuracy", "unseen_class_accuracy"])
def test_an_unfinished_exercise_fails_its_self_check_with_the_hint(function: str):
    # The student release turns the solution into a stub that raises NotImplementedError(hint); the self-check
    # cell must turn that into a CheckFailed with the hint, before it trains anything (names it would need
    # later, like train_clip, are missing here on purpose: a NameError would mean the check runs too late).
    from utils.checks import CheckFailed, check_equal
    from utils.notebooks import cell_tags, read_notebook
    from utils.student import stub_solution

    cells = read_notebook(NOTEBOOK).cells
    i = next(i for i, c in enumerate(cells) if "solution" in cell_tags(c) and f"def {function}(" in c.source)
    namespace = {"CheckFailed": CheckFailed, "check_equal": check_equal, "torch": torch}
    exec(stub_solution(cells[i].source, function), namespace)
    with pytest.raises(CheckFailed, match=f"{function} is not written yet") as failure:
        exec(cells[i + 1].source, namespace)
    hint = cells[i].source.split("# Hint:")[1].splitlines()[0].strip()
    assert hint in str(failure.value)
