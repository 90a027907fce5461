"""05.07's speculative decoding against the target alone.

Greedy: the from-scratch `speculative_generate` must return the target's own greedy `generate` tokens, token for
token, on several prompts, whatever the draft (a different tiny model, prompt lookup, the real SmolLM2-135M-Instruct
with an early-exit draft). Sampling: the tokens it emits must follow the TARGET's distribution, not the draft's.
A chi-square test compares the empirical distribution of the first two sampled tokens with the exact target
distribution (enumerated) under a toy bigram target and draft (fast enough for many samples; the same
CachedLM/ModelDraft code path as a Hugging Face model); the same test run on a wrong acceptance rule (residual = p instead of
norm(max(p - q, 0))) must reject it, so the test has the power to catch that bug.
"""

from __future__ import annotations

import pytest
import torch

import utils.speculative as spec
from utils.speculative import ModelDraft, NgramDraft, early_exit_model, speculative_generate

VOCAB = 6  # small enough to enumerate every pair of tokens


def tiny_llama(seed: int, n_layer: int, vocab: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=n_layer,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         bos_token_id=0, eos_token_id=1, pad_token_id=1, tie_word_embeddings=False)
    return LlamaForCausalLM(config).eval()


@pytest.mark.parametrize("draft_kind", ["model", "ngram", "self"])
def test_greedy_equals_the_targets_greedy_generate(draft_kind):
    target, other = tiny_llama(0, 3, 64), tiny_llama(1, 1, 64)
    draft = {"model": ModelDraft(other), "ngram": NgramDraft(64), "self": ModelDraft(target)}[draft_kind]
    gen = torch.Generator().manual_seed(0)
    for length in (1, 4, 9, 17):
        prompt = torch.randint(2, 64, (1, length), generator=gen)
        expected = target.generate(prompt, max_new_tokens=30, do_sample=False, pad_token_id=1,
                                   eos_token_id=None)[0, length:].tolist()
        for k in (1, 3, 6):
            got, _ = speculative_generate(target, draft, prompt[0].tolist(), max_new_tokens=30, k=k)
            assert got == expected, (draft_kind, length, k)


def test_greedy_equals_generate_on_the_real_smollm2():
    from utils.chat import chat_prompt, load_chat_model

    model, tok = load_chat_model("smoke")
    drafts = [ModelDraft(early_exit_model(model, 4)), NgramDraft(model.config.vocab_size)]
    questions = ["What is the capital of France?", "Repeat exactly: the cat sat on the mat, the cat sat on the mat."]
    for question in questions:
        ids = tok(chat_prompt(tok, [{"role": "user", "content": question}]), add_special_tokens=False,
                  return_tensors="pt")["input_ids"]
        expected = model.generate(ids, max_new_tokens=16, do_sample=False, eos_token_id=tok.eos_token_id,
                                  pad_token_id=tok.pad_token_id)[0, ids.shape[1]:].tolist()
        for draft in drafts:
            got, _ = speculative_generate(model, draft, ids[0].tolist(), max_new_tokens=16, k=4,
                                          eos_token_id=tok.eos_token_id)
            assert got == expected, question


class Bigram(torch.nn.Module):
    """A toy causal LM whose next-token logits depend on the last token only (no cache needed), HF-shaped."""

    def __init__(self, table: torch.Tensor):
        from transformers import LlamaConfig

        super().__init__()
        self.table = table  # (V, V): row a = the next-token logits after token a
        self.config = LlamaConfig(vocab_size=VOCAB, hidden_size=8, num_hidden_layers=1, num_attention_heads=1)
        self.device = torch.device("cpu")

    def forward(self, input_ids, past_key_values=None, use_cache=True):
        from types import SimpleNamespace

        return SimpleNamespace(logits=self.table[input_ids])  # (1, n, V)


def toy_pair() -> tuple[Bigram, Bigram]:
    """A target and a draft that half agree: the regime where a wrong residual shows most (chosen by power)."""
    table = torch.randn(VOCAB, VOCAB, generator=torch.Generator().manual_seed(10)) * 2.0
    noise = torch.randn(VOCAB, VOCAB, generator=torch.Generator().manual_seed(11)) * 2.0
    return Bigram(table), Bigram(0.5 * table + 0.5 * noise)


def exact_pair_distribution(target, prompt: list[int], temperature: float) -> torch.Tensor:
    """P(x1, x2 | prompt) under the target, (V, V), by enumeration."""
    with torch.no_grad():
        first = torch.softmax(target(torch.tensor([prompt])).logits[0, -1] / temperature, -1)
        rows = torch.tensor([prompt + [a] for a in range(VOCAB)])
        second = torch.softmax(target(rows).logits[:, -1] / temperature, -1)  # (V, V): P(x2 | x1)
    return first[:, None] * second


def pair_chi_square_pvalue(n_samples: int = 3000) -> float:
    from scipy.stats import chisquare

    target, draft = toy_pair()
    prompt, temperature = [2, 3, 4], 1.0
    expected = exact_pair_distribution(target, prompt, temperature).flatten() * n_samples
    gen = torch.Generator().manual_seed(0)
    counts = torch.zeros(VOCAB * VOCAB)
    drafter = ModelDraft(draft)
    for _ in range(n_samples):
        (a, b), _ = speculative_generate(target, drafter, prompt, max_new_tokens=2, k=2,
                                         temperature=temperature, generator=gen)
        counts[a * VOCAB + b] += 1
    keep = expected > 5  # chi-square needs expected counts of at least ~5; lump the rest together
    observed = torch.cat([counts[keep], counts[~keep].sum()[None]])
    wanted = torch.cat([expected[keep], expected[~keep].sum()[None]])
    return float(chisquare(observed.numpy(), wanted.numpy() * observed.sum().item() / wanted.sum().item()).pvalue)


def test_sampling_follows_the_target_distribution():
    assert pair_chi_square_pvalue() > 1e-3


def test_the_distribution_test_catches_a_wrong_residual(monkeypatch):
    def wrong_verify(p, q, drafted, generator=None):
        for i, x in enumerate(drafted):
            if torch.rand((), generator=generator) < p[i, x] / q[i, x]:
                continue
            return i, int(torch.multinomial(p[i], 1, generator=generator))  # BUG: p, not norm(max(p - q, 0))
        return len(drafted), int(torch.multinomial(p[-1], 1, generator=generator))

    monkeypatch.setattr(spec, "verify", wrong_verify)
    assert pair_chi_square_pvalue() < 1e-3


def test_draft_and_target_really_differ():
    """Guard for the two tests above: with identical models every residual would be empty and prove nothing."""
    target, draft = toy_pair()
    with torch.no_grad():
        p = torch.softmax(target(torch.tensor([[2, 3, 4]])).logits[0, -1], -1)
        q = torch.softmax(draft(torch.tensor([[2, 3, 4]])).logits[0, -1], -1)
    assert 0.5 * (p - q).abs().sum() > 0.3  # total-variation distance: the draft is often rejected
