"""Fixtures shared by the reference tests (pytest finds this file itself; tests never import it)."""

from __future__ import annotations

import math
from typing import Any, Callable

import pytest


@pytest.fixture(scope="session")
def peaked_gpt() -> Callable[[Any, int], tuple[Any, Any]]:
    """A factory `(config, eos) -> (GPT, its GPT2LMHeadModel)`: a tiny random GPT whose predictions are varied and
    peaked, and whose end-of-sequence token is often likely (so rows finish at different steps).

    Weights of std 2/sqrt(fan_in) make every layer change the residual stream; the final LayerNorm's bias along
    the EOS embedding raises the EOS logit by 2·|LN gain|. Used by test_02_06_decoding.py and test_gpt_generate.py.
    """

    def make(config: Any, eos: int) -> tuple[Any, Any]:
        import torch

        from utils.models.gpt import GPT, to_hf_gpt2

        torch.manual_seed(0)
        ours = GPT(config)
        with torch.no_grad():
            for p in ours.parameters():
                if p.dim() == 2:
                    p.normal_(0.0, 2.0 / math.sqrt(p.size(-1)))
            eos_row = ours.transformer.wte.weight[eos]
            ours.transformer.ln_f.bias.copy_(2.0 * eos_row / eos_row.norm())
        ours.eval()
        return ours, to_hf_gpt2(ours).eval()

    return make
