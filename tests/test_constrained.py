"""utils.constrained: token texts of a byte-level BPE, exact masked sampling, and JSON generation that is
always valid, on a tiny byte-level BPE trained here (1,000 tokens) and on hand-made vocabularies.
"""

from __future__ import annotations

import json
import math

import jsonschema
import pytest
import torch

from utils.constrained import JsonConstraint, TokenVocabulary, allowed_tokens, sample_token
from utils.json_grammar import compile_schema

SCHEMAS = [
    {"type": "object", "properties": {
        "name": {"type": "string", "maxLength": 12},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 6}, "maxItems": 3},
        "kind": {"enum": ["cat", "dog"]},
        "note": {"anyOf": [{"type": "string", "minLength": 2, "maxLength": 8}, {"type": "null"}]}},
     "required": ["name", "age", "tags", "kind"]},
    {"type": "array", "items": {"type": "object", "properties": {"x": {"type": "number", "maximum": 1.5},
                                                                   "ok": {"type": "boolean"}},
                                "required": ["ok"]}, "minItems": 1, "maxItems": 2},
]


@pytest.fixture(scope="module")
def tokenizer():
    """A 1,000-token byte-level BPE trained on Python's docs (< 1 s): the same kind as SmolLM2's."""
    from transformers import GPT2Tokenizer

    from utils.data import offline_text

    return GPT2Tokenizer().train_new_from_iterator(offline_text().splitlines(), vocab_size=1000)


@pytest.fixture(scope="module")
def vocab(tokenizer) -> TokenVocabulary:
    return TokenVocabulary.from_tokenizer(tokenizer)


class SetConstraint:
    """A constraint that allows a fixed set of ids, and counts how often it is asked."""

    def __init__(self, allowed):
        self.allowed, self.asked = set(allowed), 0

    def allows(self, token_id: int) -> bool:
        self.asked += 1
        return token_id in self.allowed

    def allowed_ids(self) -> list[int]:
        return sorted(self.allowed)


# ---- the vocabulary ----------------------------------------------------------------------------------

def test_token_texts_match_the_tokenizer(tokenizer, vocab: TokenVocabulary) -> None:
    partial = 0
    for token_id, text in enumerate(vocab.texts):
        if token_id in tokenizer.all_special_ids:
            assert text is None
        elif text is None:  # bytes that are not UTF-8 alone: decoding shows a replacement character
            partial += 1
            assert "\ufffd" in tokenizer.decode([token_id])
        else:
            assert tokenizer.decode([token_id]) == text, token_id
    assert vocab.eos_ids == {tokenizer.eos_token_id} and partial > 0  # byte tokens 0x80-0xFF are partial
    assert vocab.special_ids == set(tokenizer.all_special_ids)
    assert any(text and text.startswith(" ") for text in vocab.texts)  # 'Ġthe' became ' the'


def test_vocabulary_is_cached_per_tokenizer_and_eos(tokenizer, vocab: TokenVocabulary) -> None:
    assert TokenVocabulary.from_tokenizer(tokenizer) is vocab
    other = TokenVocabulary.from_tokenizer(tokenizer, eos_ids=(0, 5))
    assert other is not vocab and other.eos_ids == {0, 5}


def test_non_byte_level_tokenizers_are_refused() -> None:
    from transformers import BertTokenizer

    from utils.data import offline_text

    bert = BertTokenizer().train_new_from_iterator(offline_text().splitlines()[:2000], vocab_size=300)
    with pytest.raises(ValueError, match="byte-level BPE"):
        TokenVocabulary.from_tokenizer(bert, eos_ids=(bert.sep_token_id,))


# ---- the constraint -------------------------------------------------------------------------------------

def test_allowed_tokens_agree_with_checking_every_token(vocab: TokenVocabulary) -> None:
    """The pruned trie walk (and its shortcut inside strings) finds exactly the tokens allows() accepts."""
    gen = torch.Generator().manual_seed(0)
    two_strings = {"type": "object", "required": ["s", "d"], "properties": {  # strings of several kinds
        "s": {"anyOf": [{"type": "string", "maxLength": 3}, {"type": "string", "minLength": 5, "maxLength": 9}]},
        "d": {"type": "object", "additionalProperties": {"type": "integer"}}}}
    for schema in [*SCHEMAS, two_strings, two_strings]:
        c = JsonConstraint(compile_schema(schema), vocab)
        for _ in range(40):
            if c.done:
                break
            assert c.allowed_ids() == [i for i in range(len(vocab.texts)) if c.allows(i)]
            token = sample_token(torch.randn(len(vocab.texts), generator=gen), temperature=1.0,
                                 generator=gen, constraint=c)
            if token in vocab.eos_ids:
                break
            c.advance(token)


@pytest.mark.parametrize("temperature, top_p", [(0.0, 1.0), (1.0, 1.0), (0.7, 0.9), (2.0, 0.5)])
def test_constrained_generation_is_always_valid_json(tokenizer, vocab: TokenVocabulary, temperature: float,
                                                    top_p: float) -> None:
    """Random logits (the worst model there is) still give valid documents, and they finish."""
    gen = torch.Generator().manual_seed(1)
    for schema in SCHEMAS:
        for _ in range(4):
            c, ids = JsonConstraint(compile_schema(schema), vocab), []
            while not c.done and len(ids) < 400:
                token = sample_token(3 * torch.randn(len(vocab.texts), generator=gen), temperature=temperature,
                                     top_p=top_p, generator=gen, constraint=c)
                c.advance(token)
                ids.append(token)
            text = tokenizer.decode([i for i in ids if i not in vocab.eos_ids])
            assert c.done, f"not finished after 400 tokens: {text!r}"
            jsonschema.validate(json.loads(text), schema)


def test_constraint_steps_eos_and_refusals(vocab: TokenVocabulary) -> None:
    c = JsonConstraint(compile_schema({"type": "array", "items": {"type": "integer"}, "maxItems": 1}), vocab)
    eos = next(iter(vocab.eos_ids))
    token = vocab.texts.index("[")
    assert not c.allows(eos) and not c.eos_allowed and c.allows(token)
    with pytest.raises(ValueError, match="not allowed"):
        c.advance(eos)
    for text in ("[", "7", "]"):
        c.advance(vocab.texts.index(text))
    assert c.eos_allowed and c.done and c.allowed_ids() == [eos]
    c.advance(eos)
    assert c.done and not c.allows(eos)


def test_partial_utf8_and_special_tokens_are_never_allowed(tokenizer, vocab: TokenVocabulary) -> None:
    c = JsonConstraint(compile_schema({"type": "string"}), vocab)
    c.advance(vocab.texts.index('"'))  # inside a string, where almost every token is allowed
    partial = [i for i, t in enumerate(vocab.texts) if t is None and i not in tokenizer.all_special_ids]
    assert partial and not any(c.allows(i) for i in partial)
    assert len(vocab.texts) not in c.allowed_ids() and not c.allows(len(vocab.texts))  # beyond the vocab


# ---- exact masked sampling, on a hand-made vocabulary --------------------------------------------------

def expected(logits: torch.Tensor, temperature: float, top_p: float, allowed: set[int]) -> torch.Tensor:
    """The documented target, written out plainly: softmax(l/T) -> nucleus -> mask -> renormalise; if the
    nucleus holds no allowed token, the mask is applied to the whole distribution."""
    p = torch.softmax(logits.double() / temperature, dim=-1)
    nucleus, mass = [], 0.0
    for i in sorted(range(len(p)), key=lambda i: -float(p[i])):
        if top_p < 1 and mass >= top_p:
            break
        nucleus.append(i)
        mass += float(p[i])
    keep = [i for i in nucleus if i in allowed] or sorted(allowed)
    q = torch.zeros_like(p)
    q[keep] = p[keep]
    return q / q.sum()


def chi_square(counts: torch.Tensor, q: torch.Tensor) -> tuple[float, float]:
    """(Pearson's statistic, a bound it exceeds with probability < ~1e-6 if the samples follow q).

    A draw of a token that q gives probability 0 makes the statistic infinite."""
    n = counts.sum()
    if counts[q == 0].sum() > 0:
        return math.inf, 0.0
    used = q > 0
    stat = float((((counts - n * q) ** 2)[used] / (n * q[used])).sum())
    df = max(int(used.sum()) - 1, 1)
    return stat, df + 7 * math.sqrt(2 * df) + 10


def draw(logits, temperature, top_p, allowed, n=6000, max_tries=8, seed=0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    counts = torch.zeros(len(logits), dtype=torch.float64)
    for _ in range(n):
        counts[sample_token(logits, temperature=temperature, top_p=top_p, generator=gen,
                            constraint=SetConstraint(allowed), max_tries=max_tries)] += 1
    return counts


LOGITS = torch.tensor([3.0, 2.2, 2.0, 1.5, 1.1, 0.4, 0.0, -0.5, -1.0, -2.0])


@pytest.mark.parametrize("temperature, top_p, allowed, max_tries", [
    (1.0, 1.0, {1, 3, 4, 8}, 8),      # plain masking
    (0.8, 0.9, {0, 2, 5, 6, 9}, 8),   # nucleus and mask overlap
    (1.3, 0.6, {1, 2, 7, 9}, 8),      # overlap in one token only
    (1.0, 0.5, {4, 6, 7, 8}, 8),      # no allowed token in the nucleus: fall back to the whole distribution
    (1.0, 0.9, {2, 3, 8}, 1),         # one try only: exercises the listed-mask path
])
def test_sampling_matches_the_masked_distribution(temperature, top_p, allowed, max_tries) -> None:
    counts = draw(LOGITS, temperature, top_p, allowed, max_tries=max_tries)
    stat, bound = chi_square(counts, expected(LOGITS, temperature, top_p, allowed))
    assert stat < bound, (stat, bound, counts.tolist())


def test_the_chi_square_check_would_catch_masking_before_top_p() -> None:
    """Masking first, then top-p (Hugging Face's order) gives another distribution: the check tells them apart."""
    allowed, top_p = {1, 2, 3, 4}, 0.5
    p = torch.softmax(LOGITS.double(), dim=-1)
    masked = torch.full_like(p, -math.inf)
    masked[sorted(allowed)] = torch.log(p[sorted(allowed)])
    ours, other = expected(LOGITS, 1.0, top_p, allowed), expected(masked, 1.0, top_p, allowed)
    assert (ours - other).abs().max() > 0.1  # the two orders really differ here
    counts = draw(LOGITS, 1.0, top_p, allowed)
    stat, bound = chi_square(counts, ours)
    assert stat < bound
    stat, bound = chi_square(counts, other)
    assert stat > bound


def test_greedy_is_argmax_over_the_mask_ties_included() -> None:
    gen = torch.Generator().manual_seed(3)
    for trial in range(300):
        logits = torch.randint(0, 4, (40,), generator=gen).float()  # many ties
        allowed = {i for i in range(40) if torch.rand(1, generator=gen) < 0.3} or {7}
        masked = torch.where(torch.tensor([i in allowed for i in range(40)]), logits, torch.tensor(-math.inf))
        for max_tries in (1, 5, 32):
            got = sample_token(logits, temperature=0, constraint=SetConstraint(allowed), max_tries=max_tries)
            assert got == int(torch.argmax(masked)), (trial, max_tries)
    assert sample_token(logits, temperature=0) == int(torch.argmax(logits))


def test_sampling_is_reproducible_and_checks_few_tokens() -> None:
    logits = torch.randn(49152, generator=torch.Generator().manual_seed(0))
    allowed = set(range(0, 49152, 2))
    runs = []
    for _ in range(2):
        gen, c = torch.Generator().manual_seed(42), SetConstraint(allowed)
        runs.append([sample_token(logits, temperature=0.9, top_p=0.95, generator=gen, constraint=c)
                     for _ in range(50)])
        assert c.asked <= 50 * 8  # not 49,152 checks per token
    assert runs[0] == runs[1] and all(t in allowed for t in runs[0])


def test_allowed_tokens_with_underflowing_probabilities_are_still_found() -> None:
    logits = torch.full((10,), -1e4)
    logits[0], logits[9] = 0.0, -1e4 + 1  # tokens 8 and 9: probability exp(-1e4) = 0, even in float64
    assert sample_token(logits, temperature=0, constraint=SetConstraint({8, 9})) == 9
    gen = torch.Generator().manual_seed(0)
    draws = [sample_token(logits, temperature=1.0, generator=gen, constraint=SetConstraint({8, 9}))
             for _ in range(400)]
    assert set(draws) == {8, 9} and 0.62 < draws.count(9) / 400 < 0.84  # p(9) = e / (1 + e) = 0.73


def test_nothing_allowed_and_bad_arguments_fail_clearly() -> None:
    with pytest.raises(RuntimeError, match="allows no token"):
        sample_token(LOGITS, temperature=1.0, constraint=SetConstraint(set()))
    for kwargs in ({"temperature": -1}, {"top_p": 0}, {"top_p": 1.5}, {"max_tries": 0}):
        with pytest.raises(ValueError):
            sample_token(LOGITS, **kwargs)
    with pytest.raises(ValueError, match="1-D float"):
        sample_token(LOGITS[None], temperature=1.0)


def test_hand_made_vocabulary_with_a_real_grammar_is_exact() -> None:
    """JsonConstraint + sampler on a 9-token vocabulary: the empirical distribution of the first token."""
    texts = ['{', '{"', '"', '[', '1', '12', ' ', 'x', None]
    vocab = TokenVocabulary.from_texts(texts, eos_ids=[8])
    grammar = compile_schema({"type": "array", "items": {"type": "integer"}})
    logits = torch.tensor([2.0, 1.5, 1.0, 0.5, 0.3, 0.2, 0.1, 0.0, 3.0])
    gen = torch.Generator().manual_seed(5)
    counts = torch.zeros(9, dtype=torch.float64)
    for _ in range(3000):
        c = JsonConstraint(grammar, vocab)
        counts[sample_token(logits, temperature=1.0, generator=gen, constraint=c)] += 1
    stat, bound = chi_square(counts, expected(logits, 1.0, 1.0, {3}))
    assert stat < bound and counts[3] == 3000  # only "[" may start an array
    state = grammar.start().feed("[1")
    assert allowed_tokens(state, vocab) == [4, 5, 6]  # "1", "12", " " (no "," or "]" in this vocabulary)
