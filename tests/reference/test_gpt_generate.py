"""utils.models.gpt's generation features against Hugging Face: KV cache, top-k/top-p, stop tokens, `generate`.

The tiny random GPT is conftest.py's `peaked_gpt`, shared with test_02_06_decoding.py: weights of std
2/sqrt(fan_in) make its predictions varied and peaked, and its final LayerNorm bias makes the stop token often
likely, so rows finish at different steps and the padding of finished rows is exercised, not only the length limit.
"""

import dataclasses

import pytest
import torch

from utils.models.gpt import GPT, GPTConfig, KVCache, sample_next, top_k_filter, top_p_filter

TINY = GPTConfig(vocab_size=24, block_size=40, n_layer=2, n_head=2, n_embd=32)
EOS, OTHER_STOP = 5, 7


@pytest.fixture(scope="module")
def pair(peaked_gpt):
    return peaked_gpt(TINY, EOS)  # tests/reference/conftest.py


def _prompt(batch, length, seed):
    return torch.randint(0, TINY.vocab_size, (batch, length), generator=torch.Generator().manual_seed(seed))


def _hf_generate(hf, idx, max_new_tokens, eos=EOS, **kwargs):
    return hf.generate(idx, attention_mask=torch.ones_like(idx), max_new_tokens=max_new_tokens,
                       eos_token_id=eos, pad_token_id=eos if isinstance(eos, int) else eos[0], **kwargs)


def test_cached_logits_equal_recomputed_logits(pair):
    ours, _ = pair
    seq = _prompt(2, TINY.block_size, 1)
    with torch.no_grad():
        full = ours(seq)[0]  # (2, block_size, V)
        cache, pieces, start = KVCache(), [], 0
        for size in (7, 1, 3, 1, 5, 2, 1, 20):  # a prompt, then single tokens and chunks (T > 1 needs the mask)
            pieces.append(ours(seq[:, start:start + size], cache=cache)[0])
            start += size
            assert cache.length == start
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, rtol=1e-5, atol=1e-5)


def test_cache_refuses_to_pass_block_size(pair):
    cache = KVCache()
    with torch.no_grad():
        pair[0](_prompt(1, TINY.block_size, 2), cache=cache)
        with pytest.raises(ValueError, match="block_size"):
            pair[0](_prompt(1, 1, 3), cache=cache)


def test_cache_gives_the_same_tokens_with_less_work(pair):
    ours, _ = pair
    positions = []
    hook = ours.transformer.wte.register_forward_hook(lambda m, args, out: positions.append(args[0].numel()))
    try:
        prompt = _prompt(3, 6, 4)
        slow = ours.generate(prompt, 30, temperature=0, use_cache=False)
        slow_work, positions[:] = sum(positions), []
        fast = ours.generate(prompt, 30, temperature=0)
        fast_work = sum(positions)
    finally:
        hook.remove()
    assert torch.equal(slow, fast)
    assert fast_work < slow_work / 5, (fast_work, slow_work)  # 3·(6 + 29) positions against 3·(6 + ... + 35)
    # past block_size the window slides: positions are absolute, so the cache is dropped and both recompute
    assert torch.equal(ours.generate(prompt, 50, temperature=0, use_cache=False), ours.generate(prompt, 50, temperature=0))


def test_filters_equal_hf_warpers():
    from transformers.generation.logits_process import TopKLogitsWarper, TopPLogitsWarper

    g = torch.Generator().manual_seed(1)
    for _ in range(200):
        batch, vocab = int(torch.randint(1, 5, (1,), generator=g)), int(torch.randint(2, 300, (1,), generator=g))
        logits = torch.randn(batch, vocab, generator=g) * 10 ** (3 * torch.rand(1, generator=g).item() - 1.5)
        k, p = int(torch.randint(1, vocab + 1, (1,), generator=g)), torch.rand(1, generator=g).item()
        assert torch.equal(top_k_filter(logits, k), TopKLogitsWarper(top_k=k)(None, logits))
        assert torch.equal(top_p_filter(logits, p), TopPLogitsWarper(top_p=p)(None, logits))


def test_top_p_keeps_the_smallest_set_reaching_p():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert torch.isfinite(top_p_filter(logits, 0.75)).tolist() == [[True, True, False, False]]
    assert torch.isfinite(top_p_filter(logits, 0.0)).sum() == 1  # the top token always survives
    torch.manual_seed(0)
    draws = sample_next(logits.expand(2000, 4), top_p=0.75)
    assert set(draws.flatten().tolist()) == {0, 1}


def test_greedy_with_stop_tokens_equals_hf_generate(pair):
    ours, hf = pair
    prompt = _prompt(6, 4, 2)
    got = ours.generate(prompt, 20, temperature=0, stop_tokens=(EOS,))
    finished_at = {tuple((row[4:] == EOS).nonzero()[:1].flatten().tolist()) for row in got}
    assert len(finished_at) > 1, "the fixture should make rows finish at different steps"
    assert torch.equal(got, _hf_generate(hf, prompt, 20, do_sample=False))


def test_several_stop_tokens_equal_hf_eos_list(pair):
    ours, hf = pair
    prompt = _prompt(6, 4, 5)
    got = ours.generate(prompt, 20, temperature=0, stop_tokens=(OTHER_STOP, EOS))
    assert torch.equal(got, _hf_generate(hf, prompt, 20, eos=[OTHER_STOP, EOS], do_sample=False))
    first_stops = {next((t for t in row[4:].tolist() if t in (OTHER_STOP, EOS)), None) for row in got}
    assert first_stops >= {OTHER_STOP, EOS}, "some rows should stop at each of the two stop tokens"


@pytest.mark.parametrize("temperature, top_k, top_p", [(1.0, None, None), (0.7, 5, None), (1.3, None, 0.8),
                                                       (1.5, 6, 0.7)])
def test_seeded_sampling_equals_hf_generate(pair, temperature, top_k, top_p):
    ours, hf = pair
    prompt = _prompt(4, 3, 3)
    torch.manual_seed(4)  # both draw from the global generator: one multinomial call per step
    got = ours.generate(prompt, 15, temperature=temperature, top_k=top_k, top_p=top_p, stop_tokens=(EOS,))
    torch.manual_seed(4)
    expected = _hf_generate(hf, prompt, 15, do_sample=True, temperature=temperature, top_k=top_k or 0,
                            top_p=top_p or 1.0)
    assert torch.equal(got, expected)


def test_a_generator_makes_sampling_reproducible(pair):
    ours, _ = pair
    runs = [ours.generate(_prompt(2, 3, 6), 12, top_p=0.9, generator=torch.Generator().manual_seed(s))
            for s in (1, 1, 2)]
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])


@pytest.mark.parametrize("kwargs", [dict(temperature=-1.0), dict(top_p=0.0), dict(top_p=1.5), dict(top_k=0)])
def test_bad_sampling_settings_are_refused(pair, kwargs):
    with pytest.raises(ValueError, match="temperature"):
        pair[0].generate(_prompt(1, 2, 0), 3, **kwargs)


def test_only_the_last_position_goes_through_the_head(pair):
    ours, _ = pair
    rows = []  # positions (rows of C) the head turns into V logits, per call
    hook = ours.lm_head.register_forward_hook(lambda m, args, out: rows.append(args[0].shape[:-1].numel()))
    try:
        for use_cache in (True, False):
            rows[:] = []
            ours.generate(_prompt(3, 6, 7), 10, temperature=0, use_cache=use_cache)
            assert rows == [3] * 10, (use_cache, rows)  # one position per row and step, the prompt's last included
    finally:
        hook.remove()


def test_generate_turns_dropout_off_and_restores_every_mode(pair):
    ours, _ = pair
    noisy = GPT(dataclasses.replace(TINY, dropout=0.5))  # the same weights, with dropout
    noisy.load_state_dict(ours.state_dict())
    noisy.train()
    noisy.transformer.h[1].eval()  # a mix, e.g. a frozen block: restored as it was, not set to train as a whole
    modes = [m.training for m in noisy.modules()]
    prompt = _prompt(4, 5, 8)
    assert torch.equal(noisy.generate(prompt, 20, temperature=0), ours.generate(prompt, 20, temperature=0))
    assert [m.training for m in noisy.modules()] == modes
    with pytest.raises(IndexError):  # a token id outside the vocabulary fails inside the loop: modes restored too
        noisy.generate(torch.full((1, 2), TINY.vocab_size), 3)
    assert [m.training for m in noisy.modules()] == modes


def test_top_k_1_samples_the_greedy_tokens(pair):
    ours, _ = pair
    prompt = _prompt(4, 3, 9)
    greedy = ours.generate(prompt, 15, temperature=0)
    assert torch.equal(ours.generate(prompt, 15, temperature=1.3, top_k=1, generator=torch.Generator().manual_seed(0)),
                       greedy)


@pytest.mark.parametrize("temperature, top_k", [(1.0, 3), (0.5, 4), (2.0, None)])
def test_sampled_frequencies_follow_the_tempered_top_k_softmax(temperature, top_k):
    logits = torch.tensor([[2.0, 1.5, 1.0, 0.2, -0.5, -1.0, 0.8, -3.0]])  # (1, V = 8)
    expected = (logits / temperature).softmax(-1)[0]
    if top_k is not None:  # the k most likely keep their relative odds; the rest are never drawn
        kept = expected.topk(top_k).indices
        expected = torch.zeros_like(expected).index_copy(0, kept, expected[kept] / expected[kept].sum())
    n = 40_000
    draws = sample_next(logits.expand(n, -1), temperature, top_k, generator=torch.Generator().manual_seed(0))
    freq = torch.bincount(draws.flatten(), minlength=logits.size(1)) / n
    assert torch.all(freq[expected == 0] == 0)
    torch.testing.assert_close(freq, expected, rtol=0, atol=0.01)  # 4 standard errors (at most √(0.25 / n))


def test_hidden_states_are_the_body_before_the_head_and_equal_hfs_last_hidden_state(pair):
    """GPT.hidden_states (05.02's reward model and policy read it): after ln_f, before lm_head."""
    ours, hf = pair
    idx = _prompt(3, 11, 4)
    with torch.no_grad():
        states = ours.hidden_states(idx)  # (3, 11, C)
        torch.testing.assert_close(ours.lm_head(states), ours(idx)[0])
        torch.testing.assert_close(states, hf(idx, output_hidden_states=True).hidden_states[-1])
