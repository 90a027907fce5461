"""02.05's GPT, built from the notebook's own classes, against utils.models.gpt, Hugging Face and the fused kernel.

The notebook is not run: `notebook_definitions` executes only its imports, functions and classes.
"""

from dataclasses import asdict
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import GPT2LMHeadModel

from utils.models import gpt as utils_gpt
from utils.notebooks import notebook_definitions

NOTEBOOK = Path(__file__).resolve().parents[2] / "02_transformers" / "05_build_gpt_from_scratch.ipynb"


@pytest.fixture(scope="module")
def nb():
    return notebook_definitions(NOTEBOOK)


@pytest.fixture(scope="module")
def tiny(nb):
    return nb["GPTConfig"](vocab_size=37, block_size=16, n_layer=2, n_head=4, n_embd=32, dropout=0.0)


@pytest.fixture(scope="module")
def model(nb, tiny):
    """The notebook's GPT with every parameter perturbed, so biases and LayerNorm gains are not 0 / 1."""
    torch.manual_seed(0)
    gpt = nb["GPT"](tiny).eval()
    with torch.no_grad():
        for p in gpt.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return gpt


def test_explicit_attention_equals_the_fused_kernel(nb):
    torch.manual_seed(1)
    for T in (1, 5, 16):
        q, k, v = torch.randn(3, 2, 3, T, 8, dtype=torch.float64)  # (B, H, T, D) each
        ours = nb["causal_attention"](q, k, v)
        torch.testing.assert_close(ours, F.scaled_dot_product_attention(q, k, v, is_causal=True),
                                   rtol=0, atol=1e-12)
        weights = nb["causal_attention_weights"](q, k)
        torch.testing.assert_close(weights.sum(-1), torch.ones(2, 3, T, dtype=torch.float64))
        assert torch.all(weights.triu(diagonal=1) == 0), "attention weights on the future must be exactly 0"


def test_notebook_gpt_equals_utils_gpt(nb, tiny, model):
    lib = utils_gpt.GPT(utils_gpt.GPTConfig(**asdict(tiny))).eval()
    lib.load_state_dict(model.state_dict(), strict=True)
    idx = torch.randint(0, tiny.vocab_size, (3, tiny.block_size))
    targets = torch.randint(0, tiny.vocab_size, (3, tiny.block_size))
    logits, loss = model(idx, targets)
    lib_logits, lib_loss = lib(idx, targets)
    torch.testing.assert_close(logits, lib_logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(loss, lib_loss, rtol=1e-5, atol=1e-5)
    assert sorted(model.state_dict()) == sorted(lib.state_dict()), "parameter names should match utils.models.gpt"
    assert model.num_params() == lib.num_params()


def test_hf_state_dict_mapping_gives_the_same_logits(nb, tiny, model):
    hf = GPT2LMHeadModel(nb["hf_config_for"](tiny)).eval()
    hf.load_state_dict(nb["to_hf_state_dict"](model), strict=True)
    idx = torch.randint(0, tiny.vocab_size, (2, tiny.block_size))
    with torch.no_grad():
        torch.testing.assert_close(model(idx)[0], hf(idx).logits, rtol=1e-5, atol=1e-5)
        # HF shifts the labels inside; ours takes the targets already shifted
        torch.testing.assert_close(model(idx[:, :-1], idx[:, 1:])[1], hf(idx, labels=idx).loss, rtol=1e-5, atol=1e-5)


def test_gpt_is_causal_and_tied(nb, tiny, model):
    idx = torch.randint(0, tiny.vocab_size, (2, tiny.block_size))
    changed = idx.clone()
    changed[:, 9:] = (changed[:, 9:] + 1) % tiny.vocab_size
    with torch.no_grad():
        a, b = model(idx)[0], model(changed)[0]
    torch.testing.assert_close(a[:, :9], b[:, :9])
    assert not torch.allclose(a[:, 9:], b[:, 9:])
    assert model.lm_head.weight is model.transformer.wte.weight


def test_causal_self_attention_equals_torch_multihead_attention(nb):
    """02.05 says nn.MultiheadAttention is our CausalSelfAttention under other names: copy the weights, compare."""
    torch.manual_seed(0)
    x = torch.randn(2, 9, 16, dtype=torch.float64)  # (B, T, C)
    future = torch.ones(9, 9, dtype=torch.bool).triu(diagonal=1)  # nn.MultiheadAttention: True = not allowed
    for n_head in (1, 4):
        attn = nb["CausalSelfAttention"](nb["GPTConfig"](n_embd=16, n_head=n_head)).double().eval()
        mha = torch.nn.MultiheadAttention(16, n_head, batch_first=True, dtype=torch.float64).eval()
        with torch.no_grad():
            for p in attn.parameters():
                p.normal_()  # random biases too, so that mixing them up would show
            mha.in_proj_weight.copy_(attn.c_attn.weight)  # (3C, C): q, k, v stacked row-wise, as c_attn
            mha.in_proj_bias.copy_(attn.c_attn.bias)
            mha.out_proj.weight.copy_(attn.c_proj.weight)
            mha.out_proj.bias.copy_(attn.c_proj.bias)
            theirs, _ = mha(x, x, x, attn_mask=future, need_weights=False)
            torch.testing.assert_close(attn(x), theirs, rtol=0, atol=1e-12)


def test_ladder_rungs_run_and_start_near_uniform(nb, tiny):
    torch.manual_seed(0)
    idx = torch.randint(0, tiny.vocab_size, (2, tiny.block_size))
    rungs = [nb["BigramLM"](tiny)] + [nb["LadderLM"](tiny, nb[name]) for name in
                                      ("AttentionOnlyBlock", "AttentionMLPBlock", "ResidualBlock")]
    rungs.append(nb["LadderLM"](tiny, nb["Block"], final_norm=True))  # rung 6: LayerNorm, default init, own head
    assert rungs[-1].lm_head.weight is not rungs[-1].transformer.wte.weight
    assert isinstance(rungs[-1].transformer.ln_f, torch.nn.LayerNorm)
    for rung in rungs:
        logits, loss = rung(idx, idx)
        assert logits.shape == (2, tiny.block_size, tiny.vocab_size)
        assert torch.isfinite(loss)
    uniform = torch.log(torch.tensor(float(tiny.vocab_size)))
    assert abs(rungs[0](idx, idx)[1] - uniform) < 0.05, "the bigram's small initialisation gives ~ln V"


def test_make_optimizer_is_utils_optimizer_with_beta2_0_99(nb, tiny, model):
    """02.05's text: `make_optimizer(model, lr)` is `optimizer(lr, betas=(0.9, 0.99))`; the utils default is 0.95."""
    lib = utils_gpt.GPT(utils_gpt.GPTConfig(**asdict(tiny)))
    lib.load_state_dict(model.state_dict(), strict=True)
    names = {id(p): n for m in (model, lib) for n, p in m.named_parameters()}
    theirs = nb["make_optimizer"](model, 1e-3).param_groups
    ours = lib.optimizer(1e-3, betas=(0.9, 0.99)).param_groups
    for a, b in zip(theirs, ours, strict=True):
        assert [names[id(p)] for p in a["params"]] == [names[id(p)] for p in b["params"]]
        assert {k: v for k, v in a.items() if k != "params"} == {k: v for k, v in b.items() if k != "params"}
    assert theirs[0]["betas"] == (0.9, 0.99) and lib.optimizer(1e-3).param_groups[0]["betas"] == (0.9, 0.95)


def test_init_gpt_weights_std_scales_every_weight(nb):
    """init_gpt_weights(model, L, std): weights ~ N(0, std²), c_proj ~ N(0, std²/(2L)), Linear biases 0."""
    config = nb["GPTConfig"](vocab_size=500, block_size=64, n_layer=3, n_head=4, n_embd=128)
    for std in (0.02, 0.5):
        torch.manual_seed(0)
        model = nb["GPT"](config)
        nb["init_gpt_weights"](model, config.n_layer, std=std)
        for name, p in model.named_parameters():
            if name.endswith("c_proj.weight"):
                assert abs(p.std().item() / (std / (2 * config.n_layer) ** 0.5) - 1) < 0.05, name
            elif p.dim() == 2:
                assert abs(p.std().item() / std - 1) < 0.05, name
            elif name.endswith(("c_attn.bias", "c_fc.bias", "c_proj.bias")):
                assert torch.all(p == 0), name
