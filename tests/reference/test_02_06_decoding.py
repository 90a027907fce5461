"""02.06's from-scratch decoding and KV cache against Hugging Face: logits warpers, `generate`, recomputation.

The notebook's functions are imported without running it (`notebook_definitions`). The tiny random GPT
(conftest.py's `peaked_gpt`) is initialised so that its predictions are varied and fairly peaked (weights of std
2/sqrt(fan_in): every layer changes the residual stream), and its final LayerNorm bias makes the end-of-sequence
token often likely: rows and beams then finish at different lengths, so padding and beam search's pool of finished
hypotheses, length penalty and early stopping are all exercised, not only the length limit.
"""

import copy
from pathlib import Path

import pytest
import torch

from utils.models.gpt import GPTConfig
from utils.notebooks import notebook_definitions

NOTEBOOK = Path(__file__).resolve().parents[2] / "02_transformers" / "06_pretraining_and_decoding.ipynb"
TINY = GPTConfig(vocab_size=24, block_size=40, n_layer=2, n_head=2, n_embd=32)
EOS = 5


@pytest.fixture(scope="module")
def nb():
    return notebook_definitions(NOTEBOOK)


@pytest.fixture(scope="module")
def pair(peaked_gpt):
    return peaked_gpt(TINY, EOS)  # tests/reference/conftest.py


def _hf_generate(hf, idx, max_new_tokens, **kwargs):
    return hf.generate(idx, attention_mask=torch.ones_like(idx), max_new_tokens=max_new_tokens,
                       eos_token_id=EOS, pad_token_id=EOS, **kwargs)


def test_filters_equal_hf_warpers(nb):
    from transformers.generation.logits_process import TopKLogitsWarper, TopPLogitsWarper

    g = torch.Generator().manual_seed(1)
    for _ in range(300):
        batch, vocab = int(torch.randint(1, 5, (1,), generator=g)), int(torch.randint(2, 400, (1,), generator=g))
        logits = torch.randn(batch, vocab, generator=g) * 10 ** (3 * torch.rand(1, generator=g).item() - 1.5)
        k, p = int(torch.randint(1, vocab + 1, (1,), generator=g)), torch.rand(1, generator=g).item()
        assert torch.equal(nb["top_k_filter"](logits, k), TopKLogitsWarper(top_k=k)(None, logits))
        assert torch.equal(nb["top_p_filter"](logits, p), TopPLogitsWarper(top_p=p)(None, logits))


def test_top_p_keeps_smallest_set_reaching_p(nb):
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = torch.isfinite(nb["top_p_filter"](logits, 0.75))
    assert kept.tolist() == [[True, True, False, False]]  # 0.5 < 0.75 <= 0.5 + 0.3
    assert torch.isfinite(nb["top_p_filter"](logits, 0.0)).sum() == 1  # the top token always survives


def test_sample_next_equals_hf_warpers_and_multinomial(nb):
    from transformers.generation.logits_process import (LogitsProcessorList, TemperatureLogitsWarper,
                                                        TopKLogitsWarper, TopPLogitsWarper)

    g = torch.Generator().manual_seed(7)
    for trial in range(100):
        logits = torch.randn(3, 50, generator=g) * 3
        t, k, p = 0.5 + torch.rand(1, generator=g).item(), int(torch.randint(2, 30, (1,), generator=g)), 0.5
        warp = LogitsProcessorList([TemperatureLogitsWarper(t), TopKLogitsWarper(k), TopPLogitsWarper(p)])
        torch.manual_seed(trial)
        got = nb["sample_next"](logits, t, k, p)
        torch.manual_seed(trial)
        expected = torch.multinomial(warp(None, logits).softmax(dim=-1), num_samples=1)
        assert torch.equal(got, expected), f"trial {trial}: temperature, then top-k, then top-p, then one draw"
    assert torch.equal(nb["sample_next"](logits, 0.0), logits.argmax(-1, keepdim=True)), "T = 0 is greedy"


def test_greedy_equals_hf_generate(nb, pair):
    ours, hf = pair
    prompt = torch.randint(0, TINY.vocab_size, (6, 4), generator=torch.Generator().manual_seed(2))
    got = nb["generate"](ours, prompt, 20, nb["greedy_next"], eos_token_id=EOS, pad_token_id=EOS)
    finished_at = [(row[4:] == EOS).nonzero()[:1].flatten().tolist() for row in got]
    assert len({tuple(f) for f in finished_at}) > 1, "the fixture should make rows finish at different steps"
    assert torch.equal(got, _hf_generate(hf, prompt, 20, do_sample=False))


@pytest.mark.parametrize("temperature, top_k, top_p", [(1.0, None, None), (0.7, 5, None), (1.3, None, 0.8),
                                                       (1.5, 6, 0.7)])
def test_sampling_equals_hf_generate_under_the_same_seed(nb, pair, temperature, top_k, top_p):
    ours, hf = pair
    prompt = torch.randint(0, TINY.vocab_size, (4, 3), generator=torch.Generator().manual_seed(3))
    torch.manual_seed(4)
    got = nb["generate"](ours, prompt, 15, lambda z: nb["sample_next"](z, temperature, top_k, top_p),
                         eos_token_id=EOS, pad_token_id=EOS)
    torch.manual_seed(4)
    expected = _hf_generate(hf, prompt, 15, do_sample=True, temperature=temperature, top_k=top_k or 0,
                            top_p=top_p or 1.0)
    assert torch.equal(got, expected)


@pytest.mark.parametrize("length_penalty, early_stopping", [(1.0, False), (0.0, False), (2.0, False),
                                                            (-0.5, False), (1.0, True), (1.5, "never")])
def test_beam_search_equals_hf_generate(nb, pair, length_penalty, early_stopping):
    ours, hf = pair
    g = torch.Generator().manual_seed(8)
    lengths = set()
    for num_beams in (2, 4):
        for _ in range(4):
            prompt = torch.randint(0, TINY.vocab_size, (1, int(torch.randint(1, 6, (1,), generator=g))), generator=g)
            got, _ = nb["beam_search_hf_exact"](ours, prompt, num_beams, 16, EOS, length_penalty, early_stopping)
            expected = _hf_generate(hf, prompt, 16, do_sample=False, num_beams=num_beams,
                                    length_penalty=length_penalty, early_stopping=early_stopping)
            assert torch.equal(got, expected), f"num_beams={num_beams}, prompt {prompt.tolist()}"
            lengths.add(got.size(1) - prompt.size(1))
    assert len(lengths) > 1, "the fixture should make hypotheses finish at different lengths"


def test_textbook_beam_search_with_one_beam_is_greedy(nb, pair):
    ours, _ = pair
    g = torch.Generator().manual_seed(11)
    for eos in (None, EOS):
        for _ in range(6):
            prompt = torch.randint(0, TINY.vocab_size, (1, int(torch.randint(1, 6, (1,), generator=g))), generator=g)
            got, score = nb["beam_search"](ours, prompt, 1, 16, eos)
            expected = nb["generate"](ours, prompt, 16, nb["greedy_next"], eos_token_id=eos, pad_token_id=EOS)
            assert torch.equal(got, expected), f"eos={eos}, prompt {prompt.tolist()}"
            logp = nb["sequence_logprob"](ours, got, prompt.size(1)).item()
            assert abs(score - logp) < 1e-4, "the returned score must be the sequence's log-probability"


def _all_sequences_best_logprob(model, prompt, n):
    """Exhaustive search over every continuation of n tokens (no stopping token): the best sum of log p."""
    best = prompt, torch.zeros(1)
    seqs, scores = prompt, torch.zeros(1)
    for _ in range(n):
        logp = torch.log_softmax(model(seqs)[0][:, -1, :].float(), dim=-1)  # (S, V)
        V = logp.size(-1)
        scores = (scores[:, None] + logp).flatten()
        seqs = torch.cat([seqs.repeat_interleave(V, dim=0), torch.arange(V).repeat(len(seqs))[:, None]], dim=1)
    return scores.max().item()


def test_textbook_beam_search_finds_the_best_sequence_with_enough_beams(nb, pair):
    """With k >= V^(n-1) beams nothing is ever pruned: beam search is exhaustive and finds the most probable
    sequence; with fewer beams its score lies between greedy's and that optimum."""
    ours, _ = pair
    g = torch.Generator().manual_seed(12)
    V = TINY.vocab_size
    with torch.no_grad():
        for _ in range(3):
            prompt = torch.randint(0, V, (1, 3), generator=g)
            optimum = _all_sequences_best_logprob(ours, prompt, 2)
            _, exhaustive = nb["beam_search"](ours, prompt, V, 2)
            assert abs(exhaustive - optimum) < 1e-4
            greedy = nb["generate"](ours, prompt, 2, nb["greedy_next"])
            greedy_logp = nb["sequence_logprob"](ours, greedy, 3).item()
            _, some = nb["beam_search"](ours, prompt, 3, 2)
            assert greedy_logp - 1e-4 <= some <= optimum + 1e-4


def test_kv_cache_gives_the_logits_of_recomputation(nb, pair):
    ours, _ = pair
    idx = torch.randint(0, TINY.vocab_size, (2, TINY.block_size), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        full = ours(idx)[0]
    pieces, cache = [], None
    for start, stop in [(0, 9), (9, 10), (10, 17), (17, 18), (18, 30), (30, TINY.block_size)]:
        logits, cache = nb["forward_with_cache"](ours, idx[:, start:stop], cache)
        pieces.append(logits)
    assert cache[0][0].shape == (2, TINY.n_head, TINY.block_size, TINY.n_embd // TINY.n_head)
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="block_size"):
        nb["forward_with_cache"](ours, idx[:, :1], cache)


def test_cached_generation_equals_recomputation_and_does_less_work(nb, pair):
    ours = copy.deepcopy(pair[0])  # count_positions leaves a hook on the model: keep the shared one clean
    counter = nb["count_positions"](ours)
    prompt = torch.randint(0, TINY.vocab_size, (2, 5), generator=torch.Generator().manual_seed(6))
    slow = nb["generate"](ours, prompt, 30, nb["greedy_next"])
    slow_positions, counter["positions"] = counter["positions"], 0
    fast = nb["generate_cached"](ours, prompt, 30, nb["greedy_next"])
    assert torch.equal(slow, fast)
    assert counter["positions"] == 2 * (5 + 30 - 1)  # prefill + one position per new token (batch of 2)
    assert slow_positions == 2 * sum(5 + t for t in range(30))  # the whole context at every step


def test_pack_blocks_and_bits_per_char(nb):
    ids = torch.arange(23)
    blocks = nb["pack_blocks"](ids, 5)
    assert blocks.shape == (4, 6)
    assert torch.equal(blocks[:, 1:].flatten(), ids[1:21])
    assert nb["bits_per_char"](2.0, 10, 20) == pytest.approx(1.0 / torch.log(torch.tensor(2.0)).item())
