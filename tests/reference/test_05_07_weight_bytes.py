"""05.07's int8 section counts weight bytes from the tensors (`weight_mib`) instead of serialising the model:
the count must equal what torch.save really writes (float32 and dynamic-int8 layers, a tied weight counted once,
the per-channel scales included), up to the file format's few KiB of headers."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch

from utils.notebooks import notebook_definitions

NOTEBOOK = Path(__file__).resolve().parents[2] / "05_frontier" / "07_efficient_inference.ipynb"


class Tied(torch.nn.Module):
    """Two float32 linear layers between an embedding and a head that shares the embedding's weight."""

    def __init__(self, vocab: int = 300, width: int = 256):
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, width)
        self.layers = torch.nn.Sequential(torch.nn.Linear(width, 2 * width), torch.nn.Linear(2 * width, width))
        self.head = torch.nn.Linear(width, vocab, bias=False)
        self.head.weight = self.embed.weight  # tied, as in SmolLM2


def saved_mib(m: torch.nn.Module) -> float:
    buffer = io.BytesIO()
    torch.save(m.state_dict(), buffer)
    return buffer.getbuffer().nbytes / 2**20


@pytest.mark.parametrize("int8", [False, True])
def test_weight_mib_equals_what_torch_save_writes(int8):
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    weight_mib = notebook_definitions(NOTEBOOK)["weight_mib"]
    torch.manual_seed(0)
    model = Tied().eval()
    if int8:
        model.layers = quantize_dynamic(model.layers, {torch.nn.Linear: per_channel_dynamic_qconfig})
    counted, saved = weight_mib(model), saved_mib(model)
    assert 0 <= saved - counted < 0.01 * saved, (counted, saved)  # headers only: < 1 %
    if int8:  # 1 byte per weight, + a float32 bias, a float64 scale and an int64 zero point per output row
        layers = sum(lin.in_features * lin.out_features + lin.out_features * (4 + 16) for lin in Tied().layers)
        assert abs(weight_mib(model.layers) * 2**20 - layers) <= 64  # + each layer's unused scalar scale/zero point
