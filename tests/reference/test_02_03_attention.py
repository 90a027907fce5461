"""02.03 · Attention: the notebook's attention, masks and multi-head attention against PyTorch's.

The notebook's definitions are imported without running it (utils.notebooks.notebook_definitions).
"""

from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from utils.notebooks import notebook_definitions

NOTEBOOK = Path(__file__).resolve().parents[2] / "02_transformers" / "03_attention.ipynb"
EXACT = dict(rtol=0, atol=1e-10)  # float64: only rounding may differ


@pytest.fixture(scope="module")
def nb():
    return notebook_definitions(NOTEBOOK, solutions=True)


def randn(*shape):
    return torch.randn(*shape, dtype=torch.float64)


# --- scaled dot-product attention ----------------------------------------------------------------

@pytest.mark.parametrize("mask_kind", ["none", "causal", "bool", "float"])
def test_attention_equals_sdpa(nb, mask_kind):
    torch.manual_seed(0)
    B, h, T, S, d_k, d_v = 2, 3, 5, 7, 8, 6
    if mask_kind == "causal":
        S = T
    q, k, v = randn(B, h, T, d_k), randn(B, h, S, d_k), randn(B, h, S, d_v)
    if mask_kind == "none":
        ours, theirs = nb["attention"](q, k, v)[0], F.scaled_dot_product_attention(q, k, v)
    elif mask_kind == "causal":
        ours = nb["attention"](q, k, v, nb["causal_mask"](T))[0]
        theirs = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    else:
        if mask_kind == "bool":
            mask = torch.rand(B, 1, T, S) > 0.5
            mask[..., 0] = True  # no fully masked row
        else:
            mask = randn(T, S)
        ours, theirs = nb["attention"](q, k, v, mask)[0], F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    torch.testing.assert_close(ours, theirs, **EXACT)


def test_attention_scale_and_weights(nb):
    torch.manual_seed(1)
    q, k, v = randn(4, 3, 5), randn(4, 6, 5), randn(4, 6, 2)
    out, w = nb["attention"](q, k, v, scale=0.3)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, scale=0.3), **EXACT)
    assert w.shape == (4, 3, 6) and (w > 0).all()
    torch.testing.assert_close(w.sum(-1), torch.ones(4, 3, dtype=torch.float64), **EXACT)
    torch.testing.assert_close(out, w @ v, **EXACT)


# --- masks ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("T", [1, 2, 7])
def test_causal_mask(nb, T):
    mask = nb["causal_mask"](T)
    assert mask.dtype == torch.bool and mask.shape == (T, T)
    assert torch.equal(mask, torch.tril(torch.ones(T, T)).bool())


def test_padding_mask(nb):
    mask = nb["padding_mask"](torch.tensor([3, 1, 0]), 4)
    expected = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]], dtype=torch.bool)
    assert mask.dtype == torch.bool and torch.equal(mask, expected)


def test_padding_mask_equals_unpadded_attention(nb):
    torch.manual_seed(2)
    lengths = torch.tensor([5, 2, 4])
    q, k, v = randn(3, 4, 6), randn(3, 5, 6), randn(3, 5, 6)
    out, w = nb["attention"](q, k, v, nb["padding_mask"](lengths, 5)[:, None, :])
    for b, L in enumerate(lengths.tolist()):
        torch.testing.assert_close(out[b], F.scaled_dot_product_attention(q[b], k[b, :L], v[b, :L]), **EXACT)
        assert (w[b, :, L:] == 0).all()


# --- multi-head attention ------------------------------------------------------------------------

@pytest.mark.parametrize("case", ["self", "cross", "causal", "causal+padding"])
def test_multihead_equals_torch(nb, case):
    torch.manual_seed(3)
    C, n_heads, B, T, S = 24, 4, 3, 6, 8
    theirs = nn.MultiheadAttention(C, n_heads, batch_first=True, dtype=torch.float64).eval()
    ours = nb["load_torch_mha"](nb["MultiHeadAttention"](C, n_heads).double(), theirs).eval()
    x = randn(B, T, C)
    kv = randn(B, S, C) if case == "cross" else x
    our_mask = attn_mask = key_padding_mask = None
    if case.startswith("causal"):
        our_mask, attn_mask = nb["causal_mask"](T), ~nb["causal_mask"](T)  # torch: True = masked out
    if case == "causal+padding":
        keep = nb["padding_mask"](torch.tensor([6, 2, 4]), T)
        our_mask, key_padding_mask = our_mask & keep[:, None, None, :], ~keep
    out, w = ours(x, kv, kv, our_mask)
    ref, ref_w = theirs(x, kv, kv, attn_mask=attn_mask, key_padding_mask=key_padding_mask,
                        need_weights=True, average_attn_weights=False)
    torch.testing.assert_close(out, ref, **EXACT)
    torch.testing.assert_close(w, ref_w, **EXACT)
    assert sum(p.numel() for p in ours.parameters()) == 4 * C * C + 4 * C


def test_multihead_refuses_indivisible_heads(nb):
    with pytest.raises(ValueError, match="divisible"):
        nb["MultiHeadAttention"](10, 4)


def test_naive_attention_equals_fused(nb):
    torch.manual_seed(4)
    q, k, v = torch.randn(3, 1, 2, 33, 8).unbind(0)
    out, w = nb["naive_attention"](q, k, v)
    assert w.shape == (1, 2, 33, 33)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, is_causal=True), rtol=1e-5, atol=1e-5)


# --- the seq2seq model of the bottleneck experiment ----------------------------------------------

@pytest.mark.parametrize("use_attention", [False, True])
def test_seq2seq_shapes(nb, use_attention):
    torch.manual_seed(5)
    model = nb["Seq2Seq"](27, 16, use_attention).eval()
    src, tgt_in = torch.randint(0, 27, (2, 7)), torch.randint(0, 28, (2, 5))
    logits, w = model(src, tgt_in)
    assert logits.shape == (2, 5, 27)
    pred, w_greedy = model.greedy(src, 7)
    assert pred.shape == (2, 7) and pred.max() < 27
    if use_attention:
        assert w.shape == (2, 5, 7) and w_greedy.shape == (2, 7, 7)
        torch.testing.assert_close(w.sum(-1), torch.ones(2, 5))
    else:
        assert w is None and w_greedy is None
    windows = nb["windows"](torch.arange(100), 4, 6, torch.Generator().manual_seed(0))
    assert windows.shape == (4, 6) and (windows.diff(dim=1) == 1).all()


# --- the exercise solutions ----------------------------------------------------------------------

def test_causal_padded_attention(nb):
    torch.manual_seed(6)
    q, k, v = randn(3, 2, 6, 4), randn(3, 2, 6, 4), randn(3, 2, 6, 4)
    lengths = torch.tensor([6, 1, 4])
    out = nb["causal_padded_attention"](q, k, v, lengths)
    for b, L in enumerate(lengths.tolist()):
        ref = F.scaled_dot_product_attention(q[b, :, :L], k[b, :, :L], v[b, :, :L], is_causal=True)
        torch.testing.assert_close(out[b, :, :L], ref, **EXACT)
        assert (out[b, :, L:] == 0).all()


@pytest.mark.parametrize("n_head, n_kv_head", [(4, 1), (6, 2), (4, 4)])
def test_grouped_query_attention(nb, n_head, n_kv_head):
    torch.manual_seed(7)
    B, T, d = 2, 5, 3
    C = n_head * d
    x, w_q, w_o = randn(B, T, C), randn(C, C), randn(C, C)
    w_k, w_v = randn(n_kv_head * d, C), randn(n_kv_head * d, C)
    heads = lambda y, n: y.view(B, T, n, d).transpose(1, 2)
    ref = F.scaled_dot_product_attention(heads(x @ w_q.T, n_head), heads(x @ w_k.T, n_kv_head),
                                         heads(x @ w_v.T, n_kv_head), is_causal=True, enable_gqa=True)
    ref = ref.transpose(1, 2).reshape(B, T, C) @ w_o.T
    got = nb["grouped_query_attention"](x, w_q, w_k, w_v, w_o, n_head, n_kv_head)
    torch.testing.assert_close(got, ref, **EXACT)


def test_nothing_was_skipped(nb):
    assert not nb["__skipped__"], f"definitions that need the running notebook: {nb['__skipped__']}"
