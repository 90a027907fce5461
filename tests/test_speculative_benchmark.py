"""benchmarks/speculative_decoding.py: its drafts are built as named, and it rejects unknown ones."""

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "speculative_decoding.py"
spec = importlib.util.spec_from_file_location("speculative_benchmark", SCRIPT)
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def tiny_llama():
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    return LlamaForCausalLM(config).eval()


def test_drafts_are_built_from_their_names():
    from utils.speculative import ModelDraft, NgramDraft

    target = tiny_llama()
    ngram, none = bench.make_draft("ngram", target)
    assert isinstance(ngram, NgramDraft) and none is None
    early, assistant = bench.make_draft("early-exit:2", target)
    assert isinstance(early, ModelDraft) and len(assistant.model.layers) == 2
    with pytest.raises(ValueError, match="ngram, early-exit:N"):
        bench.make_draft("early-exit:two", target)


def test_timed_runs_a_warm_up_then_the_repeats():
    calls = []
    tokens, seconds = bench.timed(lambda: calls.append(1) or [7, 8], repeats=3)
    assert tokens == [7, 8] and len(seconds) == 3 and len(calls) == 4
