"""03.07's from-scratch pieces against the libraries, on random inputs: LoRALinear == peft's LoRA (forward,
gradients of A and B, merge_and_unload; biases, ranks, rsLoRA scaling) and NF4 == bitsandbytes (the codebook,
quantize_4bit's packed codes and absmax, dequantize_4bit's values; Exercise 3's reader of a Linear4bit)."""

from __future__ import annotations

import copy
import logging
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from utils.notebooks import notebook_definitions

logging.getLogger("bitsandbytes").setLevel(logging.ERROR)  # the optional-kernel notice is noise here

NOTEBOOK = Path(__file__).resolve().parents[2] / "03_llm_apps" / "07_peft_lora_and_qlora.ipynb"
ns = notebook_definitions(NOTEBOOK, solutions=True)
ns["NF4"] = ns["nf4_levels"]()  # a module constant in the notebook, built by a call (so not imported)


class Holder(nn.Module):
    """One linear layer under a name that peft can target."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.proj = linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


def ours_and_peft(seed: int, rslora: bool = False):
    """(our LoRALinear, peft's model, peft's layer, x) on the same random layer, A and a non-zero B."""
    from peft import LoraConfig, get_peft_model

    gen = torch.Generator().manual_seed(seed)
    d_in, d_out, r = (int(v) for v in torch.randint(1, 40, (3,), generator=gen))
    alpha = float(torch.randint(1, 33, (1,), generator=gen))
    torch.manual_seed(seed)
    base = nn.Linear(d_in, d_out, bias=bool(seed % 2))
    ours = ns["LoRALinear"](copy.deepcopy(base), r=r, alpha=alpha)
    if rslora:
        ours.scaling = alpha / math.sqrt(r)  # rsLoRA: the only change
    model = get_peft_model(Holder(copy.deepcopy(base)),
                           LoraConfig(r=r, lora_alpha=alpha, target_modules=["proj"], use_rslora=rslora))
    layer = model.base_model.model.proj
    with torch.no_grad():
        layer.lora_B["default"].weight.normal_(generator=gen)
        ours.A.copy_(layer.lora_A["default"].weight)
        ours.B.copy_(layer.lora_B["default"].weight)
    shape = [int(v) for v in torch.randint(1, 5, (int(torch.randint(0, 3, (1,), generator=gen)),), generator=gen)]
    return ours, model, layer, torch.randn(*shape, d_in, generator=gen)


@pytest.mark.parametrize("rslora", [False, True])
@pytest.mark.parametrize("seed", range(12))
def test_lora_forward_gradients_and_merge_match_peft(seed, rslora):
    ours, model, layer, x = ours_and_peft(seed, rslora)
    assert ours.scaling == pytest.approx(layer.scaling["default"], rel=1e-12)
    mine, theirs = ours(x), model(x)
    torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-5)
    target = torch.randn_like(theirs)
    ((mine - target) ** 2).sum().backward()
    ((theirs - target) ** 2).sum().backward()
    torch.testing.assert_close(ours.A.grad, layer.lora_A["default"].weight.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ours.B.grad, layer.lora_B["default"].weight.grad, rtol=1e-4, atol=1e-5)
    assert ours.base.weight.grad is None, "W0 is frozen"
    merged = model.merge_and_unload().proj
    assert type(merged) is nn.Linear
    torch.testing.assert_close(ours.merged().weight, merged.weight, rtol=1e-5, atol=1e-5)
    if merged.bias is not None:
        torch.testing.assert_close(ours.merged().bias, merged.bias, rtol=0, atol=0)
    torch.testing.assert_close(ours.merged()(x), mine, rtol=1e-4, atol=1e-4)


def test_lora_starts_as_the_base_layer_and_trains_only_a_and_b():
    torch.manual_seed(0)
    base = nn.Linear(20, 12)
    ours = ns["LoRALinear"](copy.deepcopy(base), r=4, alpha=8)
    x = torch.randn(7, 20)
    torch.testing.assert_close(ours(x), base(x), rtol=0, atol=0)  # B = 0
    assert ours.A.abs().sum() > 0, "A starts random, or no gradient would reach B"
    assert {n for n, p in ours.named_parameters() if p.requires_grad} == {"A", "B"}


# ------------------------------------------------------------------------------------------------- NF4
def test_nf4_levels_equal_bitsandbytes_codebook():
    import bitsandbytes.functional as F

    levels = ns["nf4_levels"]()
    torch.testing.assert_close(levels, F.get_4bit_type("nf4", device="cpu"), rtol=0, atol=1e-7)
    assert (levels == 0).sum() == 1 and (levels > 0).sum() == 8 and levels.min() == -1 and levels.max() == 1


@pytest.mark.parametrize("blocksize", [64, 128, 256])
@pytest.mark.parametrize("seed", range(6))
def test_quantize_nf4_equals_bitsandbytes(seed, blocksize):
    import bitsandbytes.functional as F

    gen = torch.Generator().manual_seed(seed)
    rows, cols = int(torch.randint(1, 20, (1,), generator=gen)), blocksize * int(torch.randint(1, 5, (1,), generator=gen))
    W = torch.randn(rows, cols, generator=gen) * 10 ** float(torch.empty(1).uniform_(-3, 1, generator=gen))
    if seed % 3 == 0:
        W[0, :blocksize // 2] = 0.0  # exact zeros stay exactly zero
    packed, absmax = ns["quantize_nf4"](W, blocksize=blocksize)
    their_packed, state = F.quantize_4bit(W, blocksize=blocksize, quant_type="nf4", compress_statistics=False)
    assert packed.dtype == torch.uint8 and packed.numel() == W.numel() // 2
    assert torch.equal(packed, their_packed.reshape(-1)), "the packed codes, byte for byte"
    torch.testing.assert_close(absmax, state.absmax, rtol=0, atol=0)
    mine = ns["dequantize_nf4"](packed, absmax, W.shape)
    torch.testing.assert_close(mine, F.dequantize_4bit(their_packed, state), rtol=1e-6, atol=1e-6 * absmax.max().item())
    if seed % 3 == 0:
        assert (mine[0, :blocksize // 2] == 0).all()


def test_read_4bit_weight_solution_equals_dequantize_4bit():
    import bitsandbytes.functional as F

    from utils.lora import to_4bit

    torch.manual_seed(0)
    net = to_4bit(nn.Sequential(nn.Linear(192, 64), nn.Linear(64, 10, bias=False)))
    for layer in net:
        torch.testing.assert_close(ns["read_4bit_weight"](layer), F.dequantize_4bit(layer.weight.data,
                                                                                   layer.weight.quant_state),
                                   rtol=0, atol=1e-6)
