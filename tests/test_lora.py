"""utils.lora: the parse/no-parse task, the cache of the frozen bottom, the top-block classifier, the training
loop and the 4-bit swap, on a tiny random Llama built in memory (no files, no downloads)."""

from __future__ import annotations

import ast
import logging
import random

import pytest
import torch
from torch import nn

from utils import lora

logging.getLogger("bitsandbytes").setLevel(logging.ERROR)  # the optional-kernel notice is noise here


class CharTokenizer:
    """Just enough of a Hugging Face tokenizer for cache_bottom: one id per character, pad id 0."""

    pad_token_id = 0

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict:
        return {"input_ids": [1 + ord(c) % 60 for c in text]}


@pytest.fixture(scope="module")
def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(config).eval()


TEXTS = ["x = f(1)", "print('hello', end='')", "a[0] += 1", "return {k: v}", "raise ValueError()", "()"]


# ------------------------------------------------------------------------------------------ the task
def test_parses():
    assert lora.parses("x = [1, 2]")
    assert not lora.parses("x = [1, 2")
    assert not lora.parses("f(a,, b)")


def test_stdlib_statements_are_one_line_statements_with_brackets():
    statements = lora.stdlib_statements(16, 48)
    assert len(statements) > 3000, "the syntax task needs thousands of distinct lines"
    assert statements == sorted(set(statements))
    for code in statements[::50]:
        assert 16 <= len(code) <= 48 and any(c in code for c in "()[]{}")
        body = ast.parse(code).body
        assert len(body) == 1 and type(body[0]).__name__ in lora.SIMPLE_STATEMENTS


@pytest.mark.parametrize("bad", [(0, 10), (20, 10)])
def test_stdlib_statements_rejects_bad_lengths(bad):
    with pytest.raises(ValueError, match="min_chars"):
        lora.stdlib_statements(*bad)


def test_corrupt_breaks_with_one_edit():
    rng = random.Random(0)
    for code in lora.stdlib_statements()[:200]:
        broken = lora.corrupt(code, rng)
        assert not lora.parses(broken)
        assert abs(len(broken) - len(code)) == 1, "one character deleted or doubled"


def test_corrupt_rejects_text_without_breakable_characters():
    with pytest.raises(ValueError, match="nothing to corrupt"):
        lora.corrupt("pass", random.Random(0))


def test_syntax_task_labels_come_from_the_parser_and_are_balanced():
    examples = lora.syntax_task(400, seed=1)
    assert len({e["original"] for e in examples}) == 400
    for e in examples:
        assert e["label"] == int(lora.parses(e["text"]))
        assert e["label"] == 1 or e["text"] != e["original"]
        assert e["assign"] == int(type(ast.parse(e["original"]).body[0]).__name__ in ("Assign", "AugAssign"))
    assert 0.4 < sum(e["label"] for e in examples) / 400 < 0.6
    assert examples == lora.syntax_task(400, seed=1), "the same seed gives the same task"
    assert examples != lora.syntax_task(400, seed=2)


@pytest.mark.parametrize("n", [0, 10**6])
def test_syntax_task_rejects_bad_n(n):
    with pytest.raises(ValueError, match="n must be between 1 and"):
        lora.syntax_task(n)


# -------------------------------------------------------------------- the cache and the top classifier
def test_cache_plus_top_blocks_equals_the_whole_model(tiny_llama):
    h, lengths = lora.cache_bottom(tiny_llama, CharTokenizer(), TEXTS, n_top=2, batch_size=4, progress=False)
    assert h.shape == (len(TEXTS), max(len(t) for t in TEXTS), 32)
    assert lengths.tolist() == [len(t) for t in TEXTS]
    top = lora.top_classifier(tiny_llama, 2, n_classes=2)
    with torch.no_grad():
        for i, text in enumerate(TEXTS):  # each text alone, unpadded, through all 4 blocks
            ids = torch.tensor([CharTokenizer()(text)["input_ids"]])
            whole = tiny_llama.model(ids).last_hidden_state[0, -1]
            mine = top.norm(lora.run_blocks(top.rotary_emb, h[i:i + 1, :lengths[i]], top.layers))[0, -1]
            torch.testing.assert_close(mine, whole, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("n_top", [0, 5])
def test_cache_and_top_reject_bad_n_top(tiny_llama, n_top):
    with pytest.raises(ValueError, match="n_top must be between 1 and 4"):
        lora.cache_bottom(tiny_llama, CharTokenizer(), TEXTS, n_top=n_top, progress=False)
    with pytest.raises(ValueError, match="n_top must be between 1 and 4"):
        lora.top_classifier(tiny_llama, n_top, n_classes=2)


def test_top_classifier_copies_and_starts_from_the_same_head(tiny_llama):
    before = {k: v.clone() for k, v in tiny_llama.state_dict().items()}
    one, two = lora.top_classifier(tiny_llama, 1, 3), lora.top_classifier(tiny_llama, 1, 3)
    torch.testing.assert_close(one.score.weight, two.score.weight, rtol=0, atol=0)
    assert all(p.requires_grad for p in one.parameters())
    with torch.no_grad():
        next(one.layers[0].parameters()).add_(1.0)  # changing the copy...
    for k, v in tiny_llama.state_dict().items():   # ...leaves the base model as it was
        assert torch.equal(v, before[k]), k
    h, lengths = lora.cache_bottom(tiny_llama, CharTokenizer(), TEXTS, n_top=1, progress=False)
    assert one(h, lengths).shape == (len(TEXTS), 3)
    with pytest.raises(ValueError, match="n_classes must be >= 2"):
        lora.top_classifier(tiny_llama, 1, 1)


def test_right_padding_does_not_change_a_line(tiny_llama):
    top = lora.top_classifier(tiny_llama, 2, 2).eval()
    h, lengths = lora.cache_bottom(tiny_llama, CharTokenizer(), TEXTS, n_top=2, progress=False)
    with torch.no_grad():
        batch = top(h, lengths)
        alone = torch.cat([top(h[i:i + 1, :lengths[i]], lengths[i:i + 1]) for i in range(len(TEXTS))])
    torch.testing.assert_close(batch, alone, rtol=1e-4, atol=1e-5)


def test_train_classifier_learns_and_predict_reads_it(tiny_llama):
    texts = [f"x = {'(' * (i % 3)}{i}" for i in range(40)]
    labels = torch.tensor([i % 3 == 0 for i in range(40)]).long()  # depends on the brackets the line opens
    h, lengths = lora.cache_bottom(tiny_llama, CharTokenizer(), texts, n_top=1, progress=False)
    top = lora.top_classifier(tiny_llama, 1, 2)
    history = lora.train_classifier(top, h, lengths, labels, steps=60, lr=3e-3, batch_size=16, progress=False)
    assert len(history["loss"]) == 60 and history["seconds"] > 0
    assert sum(history["loss"][-5:]) < sum(history["loss"][:5]) / 2
    assert (lora.predict(top, h, lengths, batch_size=7) == labels).float().mean() > 0.9
    assert not top.training, "left in eval mode"


def test_train_classifier_rejects_bad_arguments(tiny_llama):
    top = lora.top_classifier(tiny_llama, 1, 2)
    h, lengths = lora.cache_bottom(tiny_llama, CharTokenizer(), TEXTS, n_top=1, progress=False)
    y = torch.zeros(len(TEXTS)).long()
    with pytest.raises(ValueError, match="steps and batch_size must be >= 1"):
        lora.train_classifier(top, h, lengths, y, steps=0, lr=1e-3, progress=False)
    top.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        lora.train_classifier(top, h, lengths, y, steps=1, lr=1e-3, progress=False)


def test_count_parameters():
    net = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2, bias=False))
    net[0].requires_grad_(False)
    assert lora.count_parameters(net) == (8, 24)


# --------------------------------------------------------------------------------------------- 4-bit
def two_linears() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(128, 64), nn.Sequential(nn.ReLU(), nn.Linear(64, 32, bias=False)),
                         nn.Linear(32, 2))


def test_to_4bit_swaps_linears_except_kept_ones():
    import bitsandbytes as bnb

    net = two_linears()
    reference = two_linears()
    lora.to_4bit(net, keep=["2"])
    assert isinstance(net[0], bnb.nn.Linear4bit) and isinstance(net[1][1], bnb.nn.Linear4bit)
    assert type(net[2]) is nn.Linear, "kept in float32"
    assert net.is_loaded_in_4bit
    assert not any(p.requires_grad for p in net[0].parameters())
    x = torch.randn(5, 128)
    with torch.no_grad():
        gap = (net(x) - reference(x)).abs().max()
    assert 0 < gap < 0.05, "4-bit rounding changes the output a little"


def test_to_4bit_keeps_float32_absmax_and_the_portable_layout():
    """The weight stays NF4 codes plus a float32 absmax per block, also after an eval forward without gradients
    (where bitsandbytes would otherwise repack it for AVX512-BF16 CPUs with bfloat16 absmax)."""
    import bitsandbytes.functional as F

    net = lora.to_4bit(two_linears(), blocksize=64)
    layer = net[0]
    state = layer.weight.quant_state
    assert not state.nested and state.absmax.dtype == torch.float32 and state.absmax.shape == (128 * 64 // 64,)
    W = F.dequantize_4bit(layer.weight.data, state)  # (64, 128), before any forward
    net.eval()
    x = torch.randn(3, 128)
    with torch.no_grad():
        y = layer(x)
    assert layer.weight.shape == (128 * 64 // 2, 1) and layer.weight.quant_state.absmax.dtype == torch.float32
    torch.testing.assert_close(y, x @ W.T + layer.bias, rtol=1e-5, atol=1e-5)


def test_tensor_bytes_counts_codes_and_absmax():
    net = two_linears()
    floats = sum(p.numel() for p in net.parameters()) * 4
    assert lora.tensor_bytes(net) == floats
    lora.to_4bit(net, keep=["2"])
    codes = (128 * 64 + 64 * 32) // 2                       # two 4-bit codes per byte
    absmax = (128 * 64 + 64 * 32) // 64 * 4                 # one float32 per block of 64
    rest = (64 + 32 * 2 + 2) * 4                            # the biases and the kept float32 layer
    assert lora.tensor_bytes(net) == codes + absmax + rest
