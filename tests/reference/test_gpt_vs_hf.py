"""utils.models.gpt against Hugging Face's GPT2LMHeadModel: the same network, so the same numbers."""

import pytest
import torch

from utils.models.gpt import GPT, GPTConfig, from_hf_gpt2, to_hf_gpt2

TINY = GPTConfig(vocab_size=101, block_size=24, n_layer=2, n_head=4, n_embd=32)


@pytest.fixture(scope="module")
def pair():
    """Every weight randomised (biases not 0, LayerNorm gains not 1), so a mis-mapped one cannot hide."""
    torch.manual_seed(0)
    ours = GPT(TINY).eval()
    with torch.no_grad():
        for p in ours.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return ours, to_hf_gpt2(ours).eval()


def test_same_logits_and_loss(pair):
    ours, hf = pair
    idx = torch.randint(0, TINY.vocab_size, (3, TINY.block_size))
    logits, loss = ours(idx, targets=idx)
    out = hf(idx, labels=idx)
    torch.testing.assert_close(logits, out.logits, rtol=1e-5, atol=1e-5)
    # HF shifts the labels itself (position t predicts t+1); ours takes targets already shifted
    shifted = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, TINY.vocab_size), idx[:, 1:].reshape(-1))
    torch.testing.assert_close(shifted, out.loss, rtol=1e-5, atol=1e-5)
    assert loss.item() > 0


def test_greedy_generation_matches_hf_generate(pair):
    ours, hf = pair
    prompt = torch.randint(0, TINY.vocab_size, (2, 5))
    expected = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=10, do_sample=False,
                           pad_token_id=0)
    # hf_gpt2_config makes the last id HF's end-of-text token: HF stops there and pads, so ours is told the same
    assert torch.equal(ours.generate(prompt, 10, temperature=0, stop_tokens=(TINY.vocab_size - 1,), pad_token=0),
                       expected)


def test_round_trip_through_hf(pair):
    ours, hf = pair
    back = from_hf_gpt2(hf).eval()
    idx = torch.randint(0, TINY.vocab_size, (2, 7))
    assert torch.equal(back(idx)[0], ours(idx)[0])
    assert back.lm_head.weight is back.transformer.wte.weight, "the head must stay tied to the embeddings"


def test_parameter_count_is_gpt2_small():
    # 124,439,808 parameters with positions (the "124M" of GPT-2), counted on the meta device: no memory used
    with torch.device("meta"):
        model = GPT(GPTConfig())
    assert model.num_params(non_embedding=False) == 124_439_808


@pytest.mark.parametrize("kwargs, words", [
    (dict(n_embd=30, n_head=4), "divisible"), (dict(n_layer=0), "n_layer"), (dict(dropout=1.0), "dropout")])
def test_bad_configs_are_refused(kwargs, words):
    with pytest.raises(ValueError, match=words):
        GPTConfig(**kwargs)


def test_too_long_input_is_refused(pair):
    with pytest.raises(ValueError, match="block_size"):
        pair[0](torch.zeros(1, TINY.block_size + 1, dtype=torch.long))


def test_float64_converts_both_ways_without_rounding(pair):
    ours = GPT(TINY).eval()
    ours.load_state_dict(pair[0].state_dict())
    ours.double()
    with torch.no_grad():  # digits below float32's resolution: lost if any copy goes through float32
        for p in ours.parameters():
            p.add_(1e-12 * torch.randn_like(p))
    hf = to_hf_gpt2(ours).eval()
    assert {p.dtype for p in hf.parameters()} == {torch.float64}
    idx = torch.randint(0, TINY.vocab_size, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(hf(idx).logits, ours(idx)[0], rtol=1e-12, atol=1e-12)
        back = from_hf_gpt2(hf).eval()
        assert all(torch.equal(a, b) for a, b in zip(back.state_dict().values(), ours.state_dict().values()))


def test_mixed_dtypes_are_refused(pair):
    mixed = GPT(TINY)
    mixed.transformer.h[0].bfloat16()
    with pytest.raises(ValueError, match="several dtypes"):
        to_hf_gpt2(mixed)
