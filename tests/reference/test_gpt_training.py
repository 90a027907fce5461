"""utils.models.gpt's training side: GPT-2's initialisation, the weight-decay groups of `optimizer()`, dropout."""

import math

import pytest
import torch
from torch import nn

from utils.models.gpt import GPT, GPTConfig

SMALL = GPTConfig(vocab_size=512, block_size=64, n_layer=6, n_head=4, n_embd=128)


def test_gpt2_initialisation():
    torch.manual_seed(0)
    model = GPT(SMALL)
    residual_std = 0.02 / math.sqrt(2 * SMALL.n_layer)  # GPT-2: the projections into the residual stream
    seen = set()
    for name, p in model.named_parameters():
        if p.dim() == 2:  # wte (= lm_head), wpe, c_attn, c_fc: N(0, 0.02); c_proj: N(0, 0.02/√(2L)); ≥ 8192 draws
            std = residual_std if name.endswith("c_proj.weight") else 0.02
            assert abs(p.std().item() / std - 1) < 0.05, (name, p.std().item(), std)
            assert abs(p.mean().item()) < 0.05 * std, name
            seen.add(name.split(".")[-2])
        elif name.endswith("bias"):
            assert torch.all(p == 0), name
        else:  # LayerNorm gains
            assert torch.all(p == 1), name
    assert seen == {"wte", "wpe", "c_attn", "c_proj", "c_fc"}


def _names(model: nn.Module, group: dict) -> set[str]:
    by_id = {id(p): name for name, p in model.named_parameters()}
    return {by_id[id(p)] for p in group["params"]}


@pytest.mark.parametrize("bias", [True, False])
def test_optimizer_decays_matrices_only(bias):
    model = GPT(GPTConfig(vocab_size=20, block_size=8, n_layer=2, n_head=2, n_embd=16, bias=bias))
    model.transformer.wpe.weight.requires_grad_(False)  # frozen parameters are left out
    decayed, kept = model.optimizer(lr=1e-3, weight_decay=0.1).param_groups
    assert (decayed["weight_decay"], kept["weight_decay"]) == (0.1, 0.0)
    matrices = {n for n, p in model.named_parameters() if p.dim() == 2} - {"transformer.wpe.weight"}
    assert _names(model, decayed) == matrices  # the tied head is the token embedding: listed once
    assert len(decayed["params"]) == len(matrices)
    vectors = {n for n, p in model.named_parameters() if p.dim() == 1}
    assert _names(model, kept) == vectors and all(n.endswith(("bias", "weight")) for n in vectors)
    assert all(".ln_" in n or n.startswith("transformer.ln_f") or n.endswith("bias") for n in vectors)
    assert any(n.endswith("bias") for n in vectors) == bias
    assert decayed["betas"] == (0.9, 0.95)  # nanoGPT's GPT-2 default; 02.05 passes (0.9, 0.99)
    assert model.optimizer(1e-3, betas=(0.9, 0.99)).param_groups[0]["betas"] == (0.9, 0.99)


def test_a_step_with_zero_gradients_only_decays_the_matrices():
    model = GPT(GPTConfig(vocab_size=20, block_size=8, n_layer=1, n_head=2, n_embd=16))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))  # biases and gains not 0 / 1, so their decay would show
            p.grad = torch.zeros_like(p)  # Adam's own update is then 0: what changes is the decay alone
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model.optimizer(lr=0.5, weight_decay=0.2).step()  # AdamW: p ← p − lr·wd·p for the decayed group
    for n, p in model.named_parameters():
        torch.testing.assert_close(p, before[n] * (0.9 if p.dim() == 2 else 1.0), rtol=1e-6, atol=0, msg=n)


def test_dropout_is_active_in_training_only_at_every_site():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=30, block_size=12, n_layer=2, n_head=2, n_embd=16, dropout=0.3))
    plain = GPT(GPTConfig(vocab_size=30, block_size=12, n_layer=2, n_head=2, n_embd=16))
    plain.load_state_dict(model.state_dict())
    idx = torch.randint(0, 30, (2, 12))
    with torch.no_grad():
        assert torch.equal(model.eval()(idx)[0], plain.eval()(idx)[0]), "eval mode: dropout is the identity"
        model.train()
        # the sites: embeddings, each residual branch (attention, MLP) and the attention weights (inside the kernel)
        modules = [m for m in model.modules() if isinstance(m, nn.Dropout)]
        attentions = [m for m in model.modules() if hasattr(m, "c_attn")]
        assert len(modules) == 1 + 2 * 2 and all(m.p == 0.3 for m in modules)
        assert all(a.dropout == 0.3 for a in attentions)
        sites = [(m, "p") for m in modules] + [(a, "dropout") for a in attentions]
        for site in sites:  # each site alone must make the training-mode output random
            for obj, attr in sites:
                setattr(obj, attr, 0.3 if (obj, attr) == site else 0.0)
            assert not torch.equal(model(idx)[0], model(idx)[0]), site
        setattr(*site, 0.0)
        assert torch.equal(model(idx)[0], plain(idx)[0]), "with every p = 0, training mode is deterministic"
