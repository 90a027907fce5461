"""03.01's from-scratch pieces against the libraries, on the real SmolLM2-135M-Instruct (the smoke preset's model).

The notebook's functions are imported without running it (`notebook_definitions`): the ChatML renderer against
`apply_chat_template`, the Wilson interval against scipy, the batched decoding loop (shared-prefix prefill, n samples
per prompt, the logits mask) against `model.generate` greedy, sampled and with `prefix_allowed_tokens_fn`, and the
finite grammar's fast token lookup against its definition checked token by token.
"""

import random

import pytest
import torch
from scipy.stats import binomtest
from transformers import PrefixConstrainedLogitsProcessor

from utils.notebooks import notebook_definitions
from utils.runtime import repo_root

NOTEBOOK = repo_root() / "03_llm_apps" / "01_prompt_engineering.ipynb"


@pytest.fixture(scope="module")
def nb():
    return notebook_definitions(NOTEBOOK, solutions=True)


@pytest.fixture(scope="module")
def grammar(nb, chat_model):
    return nb["FiniteGrammar"](nb["VALID_JSON"], chat_model[1])


def _ids(tok, messages):
    return tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)


def _hf(model, tok, nb, prompts, max_new_tokens, **options):
    """model.generate on the whole prompts, left-padded as the notebook pads them; the new text of each row."""
    ids, mask = nb["left_pad"](prompts, tok.pad_token_id)
    out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                         pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, **options)
    return tok.batch_decode(out[:, ids.shape[1]:], skip_special_tokens=True)


def _sum_prompts(nb, tok, n, seed, shots=()):
    return [_ids(tok, nb["sum_prompt"](q, list(shots), reasoning=True)) for q, _ in nb["make_sums"](n, seed, 2, 49)]


# --------------------------------------------------------------------------------------------- chat template
def _random_conversation(rng: random.Random) -> list[dict[str, str]]:
    words = ["hello", "what is 2 + 2?", "Review: The soup was cold.", "<b>bold</b>", "naïve café", "", "a\nb"]
    messages = [{"role": "system", "content": rng.choice(words)}] if rng.random() < 0.5 else []
    for turn in range(rng.randint(1, 4)):
        role = "user" if turn % 2 == 0 else rng.choice(["assistant", "tool"])
        messages.append({"role": role, "content": " ".join(rng.choices(words, k=rng.randint(1, 3)))})
    return messages


def test_render_chatml_equals_apply_chat_template_text_and_ids(nb, chat_model):
    _, tok = chat_model
    rng = random.Random(0)
    for _ in range(40):
        messages = _random_conversation(rng)
        for generation_prompt in (True, False):
            ours = nb["render_chatml"](messages, generation_prompt)
            assert ours == tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
            assert tok(ours, add_special_tokens=False)["input_ids"] == tok.apply_chat_template(
                messages, tokenize=True, add_generation_prompt=generation_prompt, return_dict=False)


# ------------------------------------------------------------------------------------------ Wilson interval
def test_wilson_interval_equals_scipy(nb):
    rng = random.Random(1)
    cases = [(0, 1), (1, 1), (0, 20), (20, 20), (1, 3)] + [(k, n) for n in (rng.randint(1, 2000) for _ in range(200))
                                                          for k in [rng.randint(0, n)]]
    for k, n in cases:
        ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
        assert nb["wilson_interval"](k, n) == pytest.approx((ci.low, ci.high), abs=1e-12), (k, n)


def test_items_needed_is_the_smallest_n(nb):
    wilson = nb["wilson_interval"]
    for p, width in [(0.5, 0.1), (0.5, 0.05), (0.9, 0.05), (0.2, 0.15)]:
        n = nb["items_needed"](p, width)
        lo, hi = wilson(p * n, n)
        lo1, hi1 = wilson(p * (n - 1), n - 1)
        assert p - lo <= width and hi - p <= width
        assert max(p - lo1, hi1 - p) > width, "n - 1 would do: not the smallest"
    assert nb["items_needed"](0.5, 0.05) == 381  # the classic "about 400 items for ±5 points"


# ------------------------------------------------------------------------------------------- decoding loop
def test_shared_prefix_length(nb):
    f = nb["shared_prefix_length"]
    assert f([[1, 2, 3, 4], [1, 2, 5]]) == 2
    assert f([[1, 2, 3], [1, 2, 3, 4]]) == 2, "every prompt keeps at least one token of its own"
    assert f([[7, 8]]) == 1 and f([[1], [1]]) == 0 and f([[1, 2], [3, 2]]) == 0


def test_prefill_logits_equal_one_unpadded_forward_per_prompt(nb, chat_model):
    model, tok = chat_model
    prompts = _sum_prompts(nb, tok, 4, seed=3, shots=nb["SHOTS"])  # long shared prefix, own tails of several lengths
    assert nb["shared_prefix_length"](prompts) > 50
    _, logits, mask = nb["prefill"](model, prompts, tok.pad_token_id)
    assert mask.sum(dim=1).tolist() == [len(p) for p in prompts]
    with torch.no_grad():
        alone = torch.stack([model(input_ids=torch.tensor([p])).logits[0, -1] for p in prompts])
    torch.testing.assert_close(logits, alone, rtol=0, atol=2e-4)


def test_greedy_generate_equals_model_generate(nb, chat_model):
    model, tok = chat_model
    questions = ["What is the capital of France?", "Name three colours.", "Write a haiku about rain."]
    batches = [
        [_ids(tok, [{"role": "user", "content": q}]) for q in questions],        # shared default system message
        _sum_prompts(nb, tok, 3, seed=4, shots=nb["SHOTS"]),                     # few-shot: a long shared prefix
        [_ids(tok, [{"role": "system", "content": s}, {"role": "user", "content": "Hi"}])
         for s in ("Be brief.", "You are a pirate.")],                          # almost nothing shared
    ]
    for prompts in batches:
        assert nb["generate"](model, tok, prompts, 10) == _hf(model, tok, nb, prompts, 10, do_sample=False)


def test_sampled_generate_equals_model_generate_with_the_same_seed(nb, chat_model):
    model, tok = chat_model
    prompts = [_ids(tok, [{"role": "user", "content": q}]) for q in ("Tell me a joke.", "What is 12 + 29?", "Hi!")]
    for n, temperature, seed in [(1, 0.7, 0), (3, 1.0, 1)]:
        ours = nb["generate"](model, tok, prompts, 10, temperature=temperature, n=n, seed=seed)
        torch.manual_seed(seed)  # model.generate draws from the global generator, ours from its own: same stream
        theirs = _hf(model, tok, nb, prompts, 10, do_sample=True, temperature=temperature, top_k=0, top_p=1.0,
                     num_return_sequences=n)
        assert ours == theirs
        assert len(set(ours)) > 1, "the samples should differ: the test would not see a wrong row order"


def test_n_copies_of_a_prompt_follow_the_prompts_row_order(nb, chat_model):
    model, tok = chat_model
    prompts = [_ids(tok, [{"role": "user", "content": q}]) for q in ("Name a fruit.", "What is 3 + 4?", "Say hi.")]
    alone = nb["generate"](model, tok, prompts, 8)
    assert len(set(alone)) == 3, "the prompts should have different replies: the test would not see a wrong order"
    assert nb["generate"](model, tok, prompts, 8, n=3) == [reply for reply in alone for _ in range(3)]


# ------------------------------------------------------------------------------------- constrained decoding
def test_mask_logits_equals_prefix_constrained_logits_processor(nb, grammar, chat_model):
    _, tok = chat_model
    texts = ["", "{", '{"label": "p', '{"label": "negative", "confidence": ', nb["VALID_JSON"][5], '{"label": "pos']
    logits = torch.randn(len(texts), len(tok), generator=torch.Generator().manual_seed(0))
    theirs = PrefixConstrainedLogitsProcessor(lambda row, ids: grammar(texts[row]), num_beams=1)(
        torch.zeros(len(texts), 1, dtype=torch.long), logits.clone())
    assert torch.equal(nb["mask_logits"](logits, texts, grammar), theirs)


def test_finite_grammar_lookup_equals_its_definition_token_by_token(nb, grammar, chat_model):
    _, tok = chat_model
    valid = nb["VALID_JSON"]
    texts = tok.batch_decode([[i] for i in range(len(tok))])
    special = set(tok.all_special_ids)
    for so_far in ["", '{"', '{"label": "', '{"label": "positive", "confidence": ', valid[13][:-1], valid[13]]:
        by_definition = {i for i, t in enumerate(texts) if i not in special and t
                         and any(v.startswith(so_far + t) for v in valid)}
        if so_far in valid:
            by_definition.add(tok.eos_token_id)
        assert set(grammar(so_far)) == by_definition, so_far
    assert grammar(valid[0]) == [tok.eos_token_id], "a complete output allows only the end of the turn"
    assert grammar("not json") == []


def test_constrained_generate_equals_model_generate_and_always_validates(nb, grammar, chat_model):
    model, tok = chat_model
    conversations = [[nb["ROLE"], {"role": "user", "content": f"{nb['ASK_JSON']}\nReview: {text}"}]
                     for text, _ in nb["make_reviews"](4, seed=7)]
    conversations.append([{"role": "user", "content": "Tell me a long story about dragons."}])  # fights the mask
    prompts = [_ids(tok, c) for c in conversations]
    width = max(len(p) for p in prompts)
    ours = nb["generate"](model, tok, prompts, 24, allowed=grammar)
    theirs = _hf(model, tok, nb, prompts, 24, do_sample=False, prefix_allowed_tokens_fn=lambda row, ids: grammar(
        tok.decode(ids[width:], skip_special_tokens=True)))
    assert ours == theirs
    assert all(reply in nb["VALID_JSON"] and nb["parse_sentiment"](reply) is not None for reply in ours)
    # Sampling may spell the output in short tokens; 40 tokens always suffice (the longest output has 39 characters).
    sampled = nb["generate"](model, tok, prompts[-2:], 40, temperature=1.5, n=2, seed=0, allowed=grammar)
    assert all(reply in nb["VALID_JSON"] for reply in sampled), "sampling under the mask must stay valid too"


# -------------------------------------------------------------------------------------- scores and parsing
def test_label_scores_equal_one_forward_per_conversation(nb, chat_model):
    model, tok = chat_model
    conversations = [[nb["ROLE"], {"role": "user", "content": f"{nb['INSTRUCTION']}\nReview: {text}\n{nb['FORMAT']}"}]
                     for text, _ in nb["make_reviews"](5, seed=8)]
    scores = nb["label_scores"](model, tok, conversations)
    pos, neg = (tok(label, add_special_tokens=False)["input_ids"][0] for label in ("positive", "negative"))
    with torch.no_grad():
        expected = []
        for c in conversations:
            log_probs = model(input_ids=torch.tensor([_ids(tok, c)])).logits[0, -1].log_softmax(-1)
            expected.append(log_probs[pos] - log_probs[neg])
    torch.testing.assert_close(scores, torch.stack(expected), rtol=0, atol=2e-4)


def test_majority_vote_parsers_and_task_sets(nb):
    vote = nb["majority_vote"]
    assert vote([3, 5, 5, None, None, None]) == 5, "None never votes"
    assert vote([7, 2, 2, 7]) == 7, "a tie goes to the answer seen first"
    assert vote([None, None]) is None and vote([]) is None
    assert nb["parse_label"](" Negative.\n") == "negative" and nb["parse_label"]("positive!") is None
    assert nb["parse_answer"]("12 + 3 = 15. Answer: 15") == 15 and nb["parse_answer"]("Answer: 4. Answer: 5") == 4
    assert nb["parse_answer"]("The answer is 4") is None
    reviews = nb["make_reviews"](21, seed=0)
    assert [y for _, y in reviews].count("positive") == 11 and reviews == nb["make_reviews"](21, seed=0)
    for text, label in reviews:
        word = text.rstrip(".").split()[-1]
        assert word in (nb["POSITIVE"] if label == "positive" else nb["NEGATIVE"])
    for question, answer in nb["make_sums"](30, seed=0, low=11, high=49):
        numbers = [int(w) for w in question.split() if w.isdigit()]
        assert len(numbers) == 2 and all(11 <= x <= 49 for x in numbers) and sum(numbers) == answer
