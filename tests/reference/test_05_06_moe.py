"""05.06's from-scratch mixture of experts on random inputs: the load-balancing loss against transformers' Mixtral
`load_balancing_loss_func` (several layer counts, expert counts, top-k, with and without a padding mask), top-k
routing against `MixtralTopKRouter`, the MoE layer's output and gradients against `MixtralSparseMoeBlock` with copied
weights, expert capacity against a per-assignment queue written out loop by loop, the MoE GPT against the dense GPT
it was made from, and the exercise solutions (router z-loss == Switch Transformers', Mixtral's parameter counts ==
the real model's)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import MixtralConfig
from transformers.models.mixtral.modeling_mixtral import MixtralTopKRouter, load_balancing_loss_func
from transformers.models.switch_transformers.modeling_switch_transformers import router_z_loss_func

from utils.models.gpt import GPT, GPTConfig
from utils.notebooks import notebook_definitions

NOTEBOOK = Path(__file__).resolve().parents[2] / "05_frontier" / "06_mixture_of_experts.ipynb"
ns = notebook_definitions(NOTEBOOK, solutions=True) if NOTEBOOK.exists() else {}
pytestmark = pytest.mark.skipif(not ns, reason="notebook not found")


def random_logits(seed: int, layers: int, tokens: int, experts: int, scale: float = 2.0) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    return tuple(scale * torch.randn(tokens, experts, generator=gen) for _ in range(layers))


@pytest.mark.parametrize("layers, batch, time, experts, top_k", [
    (1, 1, 8, 2, 1), (1, 4, 16, 8, 2), (2, 3, 7, 4, 2), (3, 2, 33, 8, 3), (4, 5, 11, 16, 4), (2, 1, 64, 6, 6)])
@pytest.mark.parametrize("masked", [False, True])
def test_load_balancing_loss_equals_mixtral(layers, batch, time, experts, top_k, masked):
    logits = random_logits(layers * 100 + experts, layers, batch * time, experts)
    mask = None
    if masked:  # right-padded rows of different lengths, as a tokenizer's attention mask
        lengths = torch.randint(1, time + 1, (batch,), generator=torch.Generator().manual_seed(experts))
        mask = (torch.arange(time)[None, :] < lengths[:, None]).long()  # (B, T)
    ours = ns["load_balancing_loss"](logits, top_k, mask)
    theirs = load_balancing_loss_func(logits, num_experts=experts, top_k=top_k, attention_mask=mask)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


def test_load_balancing_loss_mask_changes_the_value_and_gradient_matches():
    """The mask must matter (padding routed elsewhere), and the gradient w.r.t. the logits must equal Mixtral's."""
    logits = random_logits(7, 2, 2 * 10, 4)
    mask = torch.ones(2, 10, dtype=torch.long)
    mask[1, 4:] = 0
    ours = [t.clone().requires_grad_() for t in logits]
    theirs = [t.clone().requires_grad_() for t in logits]
    a = ns["load_balancing_loss"](tuple(ours), 2, mask)
    b = load_balancing_loss_func(tuple(theirs), num_experts=4, top_k=2, attention_mask=mask)
    a.backward()
    b.backward()
    for g_ours, g_theirs in zip(ours, theirs):
        torch.testing.assert_close(g_ours.grad, g_theirs.grad, rtol=1e-5, atol=1e-7)
    assert not torch.isclose(a, ns["load_balancing_loss"](logits, 2)), "padding should change the loss"


def test_balanced_and_collapsed_routers():
    """Even routing gives the minimum k; sending every token to the same k experts gives E (the maximum)."""
    uniform = (torch.zeros(100, 8),)
    collapsed = torch.full((100, 8), -10.0)
    collapsed[:, :2] = 10.0
    assert ns["load_balancing_loss"](uniform, 2).item() == pytest.approx(2.0)
    assert ns["load_balancing_loss"]((collapsed,), 2).item() == pytest.approx(8 * 2 * 0.5, rel=1e-4)


@pytest.mark.parametrize("experts, top_k", [(2, 1), (4, 2), (8, 2), (8, 8), (5, 3)])
def test_route_equals_mixtral_router(experts, top_k):
    router = MixtralTopKRouter(MixtralConfig(hidden_size=12, num_local_experts=experts, num_experts_per_tok=top_k))
    torch.nn.init.normal_(router.weight, generator=torch.Generator().manual_seed(experts))
    x = torch.randn(40, 12, generator=torch.Generator().manual_seed(top_k))
    logits, scores, index = router(x)
    weights, ours_index = ns["route"](logits, top_k)
    assert torch.equal(ours_index, index)
    torch.testing.assert_close(weights, scores)
    torch.testing.assert_close(weights.sum(-1), torch.ones(40))


@pytest.mark.parametrize("experts, top_k, batch, time", [(2, 1, 1, 5), (4, 2, 3, 9), (8, 2, 2, 16), (6, 6, 1, 7),
                                                         (8, 3, 4, 4)])
def test_moe_layer_equals_mixtral_block_forward_and_backward(experts, top_k, batch, time):
    block = ns["random_mixtral_block"](16, 24, experts, top_k, seed=experts * 10 + top_k)
    moe = ns["moe_from_mixtral"](block)
    x = torch.randn(batch, time, 16, generator=torch.Generator().manual_seed(time))
    x_ours, x_theirs = x.clone().requires_grad_(), x.clone().requires_grad_()
    ours, theirs = moe(x_ours), block(x_theirs)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    (ours ** 2).sum().backward()
    (theirs ** 2).sum().backward()
    torch.testing.assert_close(x_ours.grad, x_theirs.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(moe.router.weight.grad, block.gate.weight.grad, rtol=1e-4, atol=1e-5)
    for e, expert in enumerate(moe.experts):
        torch.testing.assert_close(expert.gate_up.grad, block.experts.gate_up_proj.grad[e], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(expert.down.grad, block.experts.down_proj.grad[e], rtol=1e-4, atol=1e-5)


def queue_by_loops(index: torch.Tensor, n_experts: int, capacity: int) -> torch.Tensor:
    """Capacity written out: visit all first choices (token order), then all second choices, ...; fill slots."""
    used = [0] * n_experts
    keep = torch.zeros_like(index, dtype=torch.bool)
    for choice in range(index.size(1)):
        for token in range(index.size(0)):
            e = int(index[token, choice])
            if used[e] < capacity:
                keep[token, choice] = True
                used[e] += 1
    return keep


@pytest.mark.parametrize("seed", range(6))
def test_within_capacity_equals_the_queue(seed):
    gen = torch.Generator().manual_seed(seed)
    experts, top_k, tokens = 2 + seed, 1 + seed % 2, 30 + 7 * seed
    skew = torch.linspace(2, 0, experts)  # popular experts overflow
    index = ns["route"](torch.randn(tokens, experts, generator=gen) + skew, top_k)[1]
    for factor in (0.25, 0.5, 1.0, 1.5):
        capacity = ns["expert_capacity"](tokens, experts, top_k, factor)
        assert torch.equal(ns["within_capacity"](index, experts, capacity), queue_by_loops(index, experts, capacity))


def test_capacity_drops_assignments_and_large_capacity_drops_none():
    torch.manual_seed(0)
    experts = [ns["Expert"](8, 16) for _ in range(4)]
    moe = ns["MoE"](8, experts, 2)
    with torch.no_grad():
        moe.router.weight[0] += 1.0  # a router that likes expert 0: it overflows
    x = torch.randn(2, 10, 8)
    free = moe(x)
    moe.capacity_factor = 2.0  # E / k: every expert could take every token, nothing can be dropped
    assert torch.equal(moe(x), free) and moe.dropped == 0.0
    moe.capacity_factor = 0.5
    limited = moe(x)
    assert moe.dropped > 0
    # the limited output, written out: only the kept assignments add g_e · Expert_e(x)
    flat = x.reshape(20, 8)
    weights, index = ns["route"](moe.router(flat), 2)
    keep = queue_by_loops(index, 4, ns["expert_capacity"](20, 4, 2, 0.5))
    expected = torch.zeros_like(flat)
    for s in range(20):
        for j in range(2):
            if keep[s, j]:
                expected[s] += weights[s, j] * experts[int(index[s, j])](flat[s])
    torch.testing.assert_close(limited.reshape(20, 8), expected, rtol=1e-5, atol=1e-6)


def test_moe_rejects_a_bad_top_k():
    with pytest.raises(ValueError, match="top_k"):
        ns["MoE"](8, [ns["Expert"](8, 16) for _ in range(2)], 3)


def test_one_expert_moe_gpt_equals_the_dense_gpt():
    """A 1-expert, top-1 MoE GPT holding the dense GPT's MLP weights computes the same logits (router weight 1)."""
    config = GPTConfig(vocab_size=50, block_size=16, n_layer=2, n_head=2, n_embd=16)
    torch.manual_seed(0)
    dense = GPT(config).eval()
    moe = ns["moe_gpt"](config, 1, 1).eval()
    state = {k.replace("mlp.", "mlp.experts.0."): v for k, v in dense.state_dict().items()}
    state.update({k: v for k, v in moe.state_dict().items() if "router" in k})
    moe.load_state_dict(state, strict=True)
    idx = torch.randint(0, 50, (3, 16))
    torch.testing.assert_close(moe(idx)[0], dense(idx)[0], rtol=1e-5, atol=1e-5)


def test_parameter_counts_of_the_three_models():
    """MoE: the active count of dense (plus the router), the total of dense-wide (plus the router and E-1 biases)."""
    config = GPTConfig(vocab_size=64, block_size=8, n_layer=2, n_head=2, n_embd=16)
    dense, moe, wide = GPT(config), ns["moe_gpt"](config, 8, 2), ns["wide_gpt"](config, 8 * 4 * 16 // 2)
    router, extra_biases = 2 * 8 * 16, 2 * 7 * 16  # per layer: (E, C) router; E c_proj biases instead of 1
    assert ns["active_params"](dense) == dense.num_params()
    assert ns["active_params"](moe) == dense.num_params() + router + 2 * 16  # two experts' c_proj biases vs one
    assert moe.num_params() == wide.num_params() + router + extra_biases


def test_exercise_router_z_loss_equals_switch_transformers():
    gen = torch.Generator().manual_seed(0)
    for scale in (1.0, 30.0, 500.0):
        logits = scale * torch.randn(3, 7, 5, generator=gen, dtype=torch.float64)
        torch.testing.assert_close(ns["router_z_loss"](logits), router_z_loss_func(logits))


def test_exercise_mixtral_parameter_counts_equal_the_real_model():
    from transformers import MixtralForCausalLM

    config = MixtralConfig(vocab_size=120, hidden_size=48, intermediate_size=40, num_hidden_layers=3,
                           num_attention_heads=6, num_key_value_heads=2, num_local_experts=5, num_experts_per_tok=2)
    with torch.device("meta"):
        model = MixtralForCausalLM(config)
    total = sum(p.numel() for p in model.parameters())
    one_expert = 3 * 48 * 40
    assert ns["mixtral_parameter_counts"](config) == (total, total - 3 * 3 * one_expert)
