"""utils.speculative: the acceptance rule, the KV-cache rollback, the drafts, argument checks."""

from __future__ import annotations

import pytest
import torch

from utils.speculative import (CachedLM, ModelDraft, NgramDraft, early_exit_model, next_token_probs,
                               speculative_generate, verify)


def tiny_llama(seed: int, n_layer: int = 2, vocab: int = 64):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=n_layer,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         bos_token_id=0, eos_token_id=1, pad_token_id=1)
    return LlamaForCausalLM(config).eval()


def test_next_token_probs_greedy_is_one_hot_and_sampling_is_softmax():
    logits = torch.tensor([[1.0, 3.0, 2.0]])
    assert next_token_probs(logits, 0.0).tolist() == [[0.0, 1.0, 0.0]]
    assert torch.allclose(next_token_probs(logits, 2.0), torch.softmax(logits / 2, -1))
    with pytest.raises(ValueError, match="temperature"):
        next_token_probs(logits, -1.0)


def test_verify_accepts_matching_greedy_guesses_and_corrects_the_first_wrong_one():
    eye = torch.eye(5)
    p = eye[[2, 4, 0]]  # the target wants 2, 4, then 0
    assert verify(p, eye[[2, 4]], [2, 4]) == (2, 0)  # both accepted, bonus token 0
    assert verify(p, eye[[2, 3]], [2, 3]) == (1, 4)  # second rejected: the target's token 4 replaces it
    with pytest.raises(ValueError, match=r"\(k\+1, V\)"):
        verify(p, eye[[2]], [2, 4])


def test_cached_lm_rollback_gives_the_same_logits_as_a_fresh_cache():
    model = tiny_llama(0)
    lm = CachedLM(model)
    lm.extend([5, 6, 7])
    lm.extend([8, 9])  # rejected tokens
    lm.rollback(3)
    after_rollback = lm.extend([10])
    fresh = CachedLM(model).extend([5, 6, 7, 10])[-1:]
    assert lm.length == 4
    assert torch.allclose(after_rollback, fresh, atol=1e-5)
    with pytest.raises(ValueError, match="length"):
        lm.rollback(9)


def test_ngram_draft_copies_what_followed_the_last_ngram():
    draft = NgramDraft(vocab_size=20, max_ngram=2)
    tokens, q = draft.propose([1, 2, 3, 4, 5, 9, 2, 3], k=3, temperature=0.0)
    assert tokens == [4, 5, 9]
    assert q.shape == (3, 20) and q.argmax(-1).tolist() == tokens
    assert draft.propose([1, 2, 3], k=3, temperature=0.0)[0] == []  # nothing repeats: no guess


def test_model_draft_reuses_its_cache_across_rounds():
    draft = ModelDraft(tiny_llama(1))
    first, _ = draft.propose([3, 4, 5], k=3, temperature=0.0)
    again, q = draft.propose([3, 4, 5, first[0]], k=2, temperature=0.0)
    assert again == first[1:]  # greedy continuation from the cache == from scratch
    assert q.shape == (2, 64)


def test_self_draft_accepts_everything_and_rounds_shrink():
    model = tiny_llama(2)
    new, stats = speculative_generate(model, ModelDraft(model), [3, 4, 5], max_new_tokens=20, k=4)
    assert len(new) == 20 and stats["accepted"] == stats["drafted"] and stats["rounds"] == 4


def test_generation_stops_at_eos_and_budget():
    model = tiny_llama(3)
    full, _ = speculative_generate(model, NgramDraft(64), [3, 4, 5], max_new_tokens=15, k=3)
    stop = full[4]
    cut, _ = speculative_generate(model, NgramDraft(64), [3, 4, 5], max_new_tokens=15, k=3, eos_token_id=stop)
    assert cut == full[:full.index(stop) + 1]
    with pytest.raises(ValueError, match="prompt_ids"):
        speculative_generate(model, NgramDraft(64), [], max_new_tokens=3)


def test_early_exit_model_shares_the_first_blocks():
    model = tiny_llama(4, n_layer=3)
    draft = early_exit_model(model, 1)
    assert draft.model.layers[0] is model.model.layers[0] and draft.lm_head is model.lm_head
    assert len(draft.model.layers) == 1
    with pytest.raises(ValueError, match="n_layers"):
        early_exit_model(model, 4)
