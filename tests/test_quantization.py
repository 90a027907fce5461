"""utils.quantization: the rounding bounds of absmax and zero-point, per-channel and group scales, NF4 packing,
Q4_1 decoding of a block built by hand, error-compensating rounding vs round-to-nearest, perplexity, and the
ValueErrors. (tests/reference/test_05_05_quantization.py compares with bitsandbytes and gguf.)"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from utils import quantization as Q


def weights(seed: int, shape=(16, 64)) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_absmax_error_is_at_most_half_a_step(bits):
    w = weights(bits)
    q, s = Q.absmax_quantize(w, bits)
    assert q.abs().max() <= 2 ** (bits - 1) - 1 and s.numel() == 1
    assert (Q.absmax_dequantize(q, s) - w).abs().max() <= s.item() / 2 + 1e-6


@pytest.mark.parametrize("bits", [3, 8])
def test_zeropoint_uses_the_whole_range_and_keeps_zero_exact(bits):
    w = weights(1).abs() + 0.5  # all positive: absmax would waste the negative half
    w[0, 0] = 0.0
    q, s, z = Q.zeropoint_quantize(w, bits)
    assert q.min() == 0 and q.max() == 2 ** bits - 1
    x_hat = Q.zeropoint_dequantize(q, s, z)
    assert (x_hat - w).abs().max() <= s.item() / 2 + 1e-6
    assert x_hat[0, 0] == 0.0  # 0 maps to the integer z and back exactly
    error_absmax = (Q.absmax_dequantize(*Q.absmax_quantize(w, bits)) - w).pow(2).mean()
    assert (x_hat - w).pow(2).mean() < error_absmax


def test_per_channel_beats_per_tensor_with_an_outlier_row():
    w = weights(2)
    w[3] *= 50  # one loud output channel
    per_tensor = Q.absmax_dequantize(*Q.absmax_quantize(w, 8))
    per_row = Q.absmax_dequantize(*Q.absmax_quantize(w, 8, dim=0))
    quiet = torch.arange(16) != 3
    assert (per_row - w)[quiet].pow(2).mean() < (per_tensor - w)[quiet].pow(2).mean() / 100


def test_fake_quantize_groups_are_independent():
    w = weights(3, (4, 64))
    w[:, :32] *= 100  # the first group of each row is loud, the second quiet
    grouped = Q.fake_quantize(w, 4, group_size=32, scheme="zeropoint")
    per_row = Q.fake_quantize(w, 4, scheme="zeropoint")
    assert grouped.shape == w.shape and grouped.dtype == w.dtype
    assert (grouped - w)[:, 32:].abs().max() < (per_row - w)[:, 32:].abs().max() / 10
    # each group of 32 takes at most 16 distinct values at 4 bits
    assert all(len(torch.unique(g)) <= 16 for g in grouped.reshape(-1, 32))


def test_nf4_packs_first_value_in_the_high_nibble():
    code = Q.nf4_code()
    x = torch.stack([code[15], code[0], code[7], code[9]] * 16)  # 64 values, absmax 1: exact levels
    packed, absmax = Q.nf4_quantize(x, 64)
    assert packed.shape == (32, 1) and absmax.tolist() == [1.0]
    assert packed[:2, 0].tolist() == [15 << 4 | 0, 7 << 4 | 9]
    assert torch.equal(Q.nf4_dequantize(packed, absmax, (64,), 64), x)
    assert code[7] == 0 and code[0] == -1 and code[15] == 1 and len(code) == 16


def test_q4_1_block_by_hand():
    d, m = np.float16(0.5), np.float16(-2.0)
    q = np.arange(32) % 16  # the weights' codes in order
    qs = (q[:16] | (q[16:] << 4)).astype(np.uint8)  # weight j in the low nibble, j + 16 in the high nibble
    raw = np.concatenate([np.frombuffer(d.tobytes() + m.tobytes(), np.uint8), qs])
    assert np.array_equal(Q.q4_1_dequantize(raw), 0.5 * q.astype(np.float32) - 2.0)
    with pytest.raises(ValueError, match="20-byte"):
        Q.q4_1_dequantize(raw[:19])


def test_gptq_beats_round_to_nearest_on_correlated_inputs():
    gen = torch.Generator().manual_seed(0)
    mix = torch.randn(32, 32, generator=gen)
    x = torch.randn(512, 32, generator=gen) @ mix  # correlated features, as real activations are
    w = torch.randn(8, 32, generator=gen)
    rtn = Q.zeropoint_dequantize(*Q.zeropoint_quantize(w, 3, dim=0))
    gptq = Q.gptq_quantize(w, x, bits=3)
    err = lambda wq: (x @ (w - wq).T).pow(2).sum().item()  # noqa: E731
    assert err(gptq) < 0.7 * err(rtn)
    _, s, z = Q.zeropoint_quantize(w, 3, dim=0)  # GPTQ stays on the same grid: every value is s (k - z)
    k = gptq / s + z
    assert torch.allclose(k, k.round(), atol=1e-4) and k.round().min() >= 0 and k.round().max() <= 7


def test_perplexity_of_a_uniform_model_is_the_vocabulary_size():
    class Uniform(torch.nn.Module):
        device = torch.device("cpu")  # what a Hugging Face model reports; perplexity moves each window there

        def forward(self, ids, labels):
            logits = torch.zeros(*ids.shape, 10)
            loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 10), labels[:, 1:].reshape(-1))
            return type("Out", (), {"loss": loss})()

    assert Q.perplexity(Uniform(), torch.randint(0, 10, (1, 40)), window=8) == pytest.approx(10.0)


@pytest.mark.parametrize("call, message", [
    (lambda: Q.absmax_quantize(torch.ones(4), bits=1), "bits must be"),
    (lambda: Q.zeropoint_quantize(torch.ones(2, 4), bits=8, dim=2), "dim must be"),
    (lambda: Q.fake_quantize(torch.ones(2, 30), 4, group_size=32), "group_size"),
    (lambda: Q.fake_quantize(torch.ones(2, 32), 4, scheme="nf4"), "scheme"),
    (lambda: Q.nf4_quantize(torch.ones(63), 63), "even"),
    (lambda: Q.gptq_quantize(torch.ones(2, 4), torch.ones(3, 5), 4), "x must be"),
    (lambda: Q.perplexity(None, torch.ones(1, 4, dtype=torch.long), window=8), "ids must be"),
])
def test_bad_arguments_say_what_was_given(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2)
    return LlamaForCausalLM(config).eval()


@pytest.mark.parametrize("method, bits", [("fp32", 32.0), ("int8", 8 + 32 * 512 / 36864),
                                          ("nf4", 4.5), ("q4_1", 5.0), ("q3_g32", 3 + 19 / 32),
                                          ("llm.int8", 8 + 32 * 512 / 36864)])
def test_quantize_model_stores_the_blocks_in_the_format(method, bits):
    import logging

    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    model, ids = tiny_llama(), torch.randint(0, 64, (1, 16))
    before = [m.weight.detach().clone() for _, m in Q.block_linears(model)]
    with torch.no_grad():
        reference = model(ids).logits
    assert Q.quantize_model(model, method) == pytest.approx(bits)
    assert len(Q.block_linears(model)) == 14  # 2 blocks x 7 matrices; the head is left alone
    with torch.no_grad():
        change = (model(ids).logits - reference).abs().max().item()
    assert (change == 0) == (method == "fp32") and change < 1.0
    if method in ("int8", "q3_g32"):  # weights are replaced by values on the format's grid
        after = [m.weight for _, m in Q.block_linears(model)]
        levels = max(len(torch.unique(w.reshape(-1, 32)[0])) for w in after)
        assert levels <= (256 if method == "int8" else 8) and not torch.equal(after[0], before[0])
    with pytest.raises(ValueError, match="method must be"):
        Q.quantize_model(model, "q2_k")
