"""02.04's from-scratch transformer parts against PyTorch, with copied weights: the same functions, so the same numbers.

The notebook is not run: `notebook_definitions` executes only its imports, functions, classes and constants.
"""

from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from utils.notebooks import notebook_definitions

NOTEBOOK = Path(__file__).resolve().parents[2] / "02_transformers" / "04_transformer_architecture.ipynb"
ATOL = 1e-10  # float64 everywhere: only rounding may differ


@pytest.fixture(scope="module")
def nb():
    return notebook_definitions(NOTEBOOK, solutions=True)


def randomized(module: nn.Module) -> nn.Module:
    """Every parameter moved off its initial value (LayerNorm gains, zero biases), so that all of them are tested."""
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return module.double()


def test_layer_norm_matches_torch(nb):
    torch.manual_seed(0)
    theirs = randomized(nn.LayerNorm(24))
    ours = nb["LayerNorm"](24).double()
    ours.load_state_dict(theirs.state_dict())
    x = (5 * torch.randn(3, 7, 24, dtype=torch.float64) + 2).requires_grad_()
    upstream = torch.randn(3, 7, 24, dtype=torch.float64)
    grads = []
    for layer in (ours, theirs):
        out = layer(x)
        grads.append(torch.autograd.grad((out * upstream).sum(), (x, layer.weight, layer.bias)))
        grads[-1] = (out.detach(),) + grads[-1]
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=0, atol=ATOL)


def test_gelu_and_feed_forward(nb):
    z = 5 * torch.randn(500, dtype=torch.float64)
    torch.testing.assert_close(nb["gelu"](z), F.gelu(z), rtol=0, atol=1e-12)
    ffn = nb["FeedForward"](8, 32, "relu").double()
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    expected = ffn.linear2(torch.relu(ffn.linear1(x)))
    torch.testing.assert_close(ffn(x), expected, rtol=0, atol=ATOL)
    with pytest.raises(ValueError, match="activation"):
        nb["FeedForward"](8, 32, "tanh")


def test_multi_head_attention_matches_torch(nb):
    torch.manual_seed(1)
    B, T, S, C, h = 3, 5, 8, 16, 4
    theirs = randomized(nn.MultiheadAttention(C, h, batch_first=True))
    ours = nb["MultiHeadAttention"](C, h).double()
    ours.load_state_dict(theirs.state_dict())
    x, memory = torch.randn(B, T, C, dtype=torch.float64), torch.randn(B, S, C, dtype=torch.float64)
    pad_x = torch.arange(T) >= torch.tensor([5, 3, 1])[:, None]
    pad_m = torch.arange(S) >= torch.tensor([8, 4, 2])[:, None]
    causal = torch.ones(T, T, dtype=torch.bool).triu(1)
    out, w = ours(x, x, x, key_padding_mask=pad_x, causal=True)
    ref, ref_w = theirs(x, x, x, key_padding_mask=pad_x, attn_mask=causal)
    torch.testing.assert_close(out, ref, rtol=0, atol=ATOL)
    torch.testing.assert_close(w.mean(dim=1), ref_w, rtol=0, atol=ATOL)
    out, w = ours(x, memory, memory, key_padding_mask=pad_m)
    ref, ref_w = theirs(x, memory, memory, key_padding_mask=pad_m)
    torch.testing.assert_close(out, ref, rtol=0, atol=ATOL)
    torch.testing.assert_close(w.mean(dim=1), ref_w, rtol=0, atol=ATOL)


@pytest.mark.parametrize("norm_first", [True, False])
@pytest.mark.parametrize("activation", ["gelu", "relu"])
def test_encoder_layer_matches_torch(nb, norm_first, activation):
    torch.manual_seed(2)
    B, S, C, h, d_ff = 3, 7, 16, 4, 48
    theirs = randomized(nn.TransformerEncoderLayer(C, h, d_ff, dropout=0.0, activation=activation,
                                                   batch_first=True, norm_first=norm_first))
    ours = nb["EncoderLayer"](C, h, d_ff, norm_first, activation).double()
    ours.load_state_dict(nb["from_torch_names"](theirs.state_dict()))  # strict: names must match one to one
    x = torch.randn(B, S, C, dtype=torch.float64)
    pad = torch.arange(S) >= torch.tensor([7, 4, 1])[:, None]
    torch.testing.assert_close(ours(x, key_padding_mask=pad), theirs(x, src_key_padding_mask=pad),
                               rtol=0, atol=ATOL)
    torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=ATOL)


@pytest.mark.parametrize("norm_first", [True, False])
@pytest.mark.parametrize("activation", ["gelu", "relu"])
def test_decoder_layer_matches_torch(nb, norm_first, activation):
    torch.manual_seed(3)
    B, T, S, C, h, d_ff = 3, 6, 7, 16, 2, 40
    theirs = randomized(nn.TransformerDecoderLayer(C, h, d_ff, dropout=0.0, activation=activation,
                                                   batch_first=True, norm_first=norm_first))
    ours = nb["DecoderLayer"](C, h, d_ff, norm_first, activation).double()
    ours.load_state_dict(nb["from_torch_names"](theirs.state_dict()))
    y, memory = torch.randn(B, T, C, dtype=torch.float64), torch.randn(B, S, C, dtype=torch.float64)
    tgt_pad = torch.arange(T) >= torch.tensor([6, 5, 2])[:, None]
    mem_pad = torch.arange(S) >= torch.tensor([7, 3, 5])[:, None]
    causal = torch.ones(T, T, dtype=torch.bool).triu(1)
    out = ours(y, memory, tgt_key_padding_mask=tgt_pad, memory_key_padding_mask=mem_pad)
    ref = theirs(y, memory, tgt_mask=causal, tgt_key_padding_mask=tgt_pad, memory_key_padding_mask=mem_pad,
                 tgt_is_causal=True)
    torch.testing.assert_close(out, ref, rtol=0, atol=ATOL)


def test_seq2seq_is_causal_and_ignores_source_padding(nb):
    torch.manual_seed(4)
    model = nb["Seq2SeqTransformer"](13, 10, 16, 2, 2).double().eval()
    src, tgt = nb["make_reversal_batch"](4, 3, 8, 10, torch.Generator().manual_seed(0))
    assert src.shape == (4, 8) and tgt.shape == (4, 10)
    logits, loss = model(src, tgt[:, :-1], targets=tgt[:, 1:])
    assert logits.shape == (4, 9, 13) and loss.item() > 0
    later = tgt[:, :-1].clone()
    later[:, 5:] = 3  # a different future from position 5 on
    torch.testing.assert_close(model(src, later)[0][:, :5], logits[:, :5], rtol=0, atol=ATOL)
    longer = torch.cat([src, torch.zeros(4, 3, dtype=src.dtype)], dim=1)  # more padding, same strings
    model.src_pos = nn.Embedding(11, 16).double()  # room for the longer source
    a, b = model(src, tgt[:, :-1])[0], model(longer, tgt[:, :-1])[0]
    torch.testing.assert_close(a, b, rtol=0, atol=ATOL)


def test_reversal_data_and_exact_match(nb):
    src, tgt = nb["make_reversal_batch"](50, 2, 6, 10, torch.Generator().manual_seed(1))
    for s, t in zip(src, tgt):
        assert nb["to_text"](t).split() == nb["to_text"](s).split()[::-1]
    assert nb["exact_match"](tgt, tgt).all()
    wrong = tgt.clone()
    wrong[:, 1] = nb["EOS"]  # stop too early
    assert not nb["exact_match"](wrong, tgt).any()


def test_exercise_solutions(nb):
    warmup = nb["linear_warmup"]
    assert [warmup(step, 4) for step in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert warmup(0, 1) == 1.0
    torch.manual_seed(5)
    theirs = randomized(nn.TransformerEncoderLayer(16, 4, 64, dropout=0.0, activation="gelu", batch_first=True,
                                                   norm_first=True))
    block = nb["DecoderOnlyLayer"](16, 4, 64).double()
    block.load_state_dict(nb["from_torch_names"](theirs.state_dict()))
    x = torch.randn(2, 6, 16, dtype=torch.float64)
    causal = torch.ones(6, 6, dtype=torch.bool).triu(1)
    torch.testing.assert_close(block(x), theirs(x, src_mask=causal, is_causal=True), rtol=0, atol=ATOL)
    layer = nb["EncoderLayer"](16, 4, 32).double()
    sequences = [torch.randn(n, 16, dtype=torch.float64) for n in (3, 6, 1)]
    for got, s in zip(nb["encode_padded"](layer, sequences), sequences):
        torch.testing.assert_close(got, layer(s[None])[0], rtol=0, atol=ATOL)

