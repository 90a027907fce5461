"""utils.llm_engine with the real SmolLM2-135M-Instruct: batching changes nothing a client can see.

The model is loaded once per test process (session fixture in conftest: `chat_model`).
"""

from __future__ import annotations

import threading
import time

import pytest
import torch

from utils.llm_engine import Engine, Event, SamplingParams, _overlap

QUESTIONS = ["What is the capital of France?", "Write a haiku about the sea.",
             "Name three primary colours.", "What is 2+2? Explain step by step like a teacher would."]


@pytest.fixture(scope="module")
def prompts(chat_model) -> list[list[int]]:
    _, tokenizer = chat_model
    return [tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True,
                                          tokenize=True, return_dict=False) for q in QUESTIONS]


@pytest.fixture(scope="module")
def engine(chat_model):
    model, tokenizer = chat_model
    engine = Engine(model, tokenizer, max_batch=3)  # fewer rows than questions: one has to wait its turn
    yield engine
    engine.close()


def _greedy_alone(chat_model, prompt: list[int], n: int) -> list[int]:
    model, _ = chat_model
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                             max_new_tokens=n, do_sample=False)
    return out[0, len(prompt):].tolist()


def test_a_batch_with_joins_and_leaves_gives_each_request_its_own_greedy_tokens(engine, prompts, chat_model):
    _, tokenizer = chat_model
    n = 16
    handles = []
    for prompt in prompts:  # staggered: later requests join a batch that is already decoding
        handles.append(engine.submit(prompt, SamplingParams(max_tokens=n, temperature=0)))
        time.sleep(0.2)
    results = [h.result() for h in handles]
    assert engine.stats["max_rows"] >= 2, "the requests never shared a batch: the test proves nothing"
    for prompt, (text, finish, count) in zip(prompts, results):
        alone = _greedy_alone(chat_model, prompt, n)
        eos = alone.index(tokenizer.eos_token_id) if tokenizer.eos_token_id in alone else len(alone)
        assert text == tokenizer.decode(alone[:eos], skip_special_tokens=True)
        assert count == eos and finish == ("stop" if eos < n else "length")


def test_streamed_pieces_add_up_to_the_text_and_the_last_event_finishes(engine, prompts):
    events = list(engine.submit(prompts[1], SamplingParams(max_tokens=12, temperature=0)))
    assert all(e.finish_reason is None for e in events[:-1]) and events[-1].finish_reason == "length"
    assert len(events) > 3, "the text came in one piece: nothing was streamed"
    text = engine.generate(prompts[1], SamplingParams(max_tokens=12, temperature=0))[0]
    assert "".join(e.text for e in events) == text
    assert events[-1].completion_tokens == 12


def test_stop_string_ends_the_text_before_it_and_is_never_streamed(engine, prompts):
    whole = engine.generate(prompts[0], SamplingParams(max_tokens=20, temperature=0))[0]
    assert "Paris" in whole, whole
    events = list(engine.submit(prompts[0], SamplingParams(max_tokens=20, temperature=0, stop=("Paris",))))
    text = "".join(e.text for e in events)
    assert text == whole[:whole.index("Paris")] and events[-1].finish_reason == "stop"
    assert not any("Par" in e.text for e in events)  # held back, then dropped: no piece of the stop string


def test_a_seed_repeats_a_sampled_answer_and_another_seed_changes_it(engine, prompts):
    params = dict(max_tokens=24, temperature=1.0)
    first = engine.generate(prompts[1], SamplingParams(seed=7, **params))
    assert engine.generate(prompts[1], SamplingParams(seed=7, **params)) == first
    others = {engine.generate(prompts[1], SamplingParams(seed=s, **params))[0] for s in (8, 9, 10)}
    assert others - {first[0]}, "three other seeds all gave the same text as seed 7"


def test_a_cancelled_request_leaves_the_batch_at_once(engine, prompts):
    handle = engine.submit(prompts[3], SamplingParams(max_tokens=400, temperature=1.0, seed=1))
    events = iter(handle)
    next(events)
    before = engine.stats["cancelled"]
    handle.cancel()
    last = list(events)[-1]
    assert last.finish_reason == "cancelled" and last.completion_tokens < 100
    assert engine.stats["cancelled"] == before + 1
    deadline = time.monotonic() + 5
    while engine.active and time.monotonic() < deadline:
        time.sleep(0.05)
    assert engine.active == 0


def test_a_failing_step_ends_its_requests_with_an_error_and_the_engine_keeps_serving(chat_model, prompts):
    model, tokenizer = chat_model
    calls = {"n": 0}

    def flaky(logits, **kwargs):  # the first two calls fail, later ones are greedy
        calls["n"] += 1
        if calls["n"] <= 2:
            raise RuntimeError("boom")
        return int(logits.argmax())

    engine = Engine(model, tokenizer, max_batch=2, sampler=flaky)
    try:
        last = list(engine.submit(prompts[0], SamplingParams(max_tokens=4, temperature=0)))[-1]
        assert last.finish_reason == "error" and "boom" in last.error
        with pytest.raises(RuntimeError, match="generation failed: RuntimeError: boom"):
            engine.generate(prompts[0], SamplingParams(max_tokens=4, temperature=0))
        assert engine.generate(prompts[0], SamplingParams(max_tokens=4, temperature=0))[1] == "length"
    finally:
        engine.close()


def test_bad_requests_are_refused_with_what_is_allowed(engine, prompts):
    with pytest.raises(ValueError, match="context of 8192 tokens"):
        engine.submit(prompts[0], SamplingParams(max_tokens=8192))
    with pytest.raises(ValueError, match="no tokens"):
        engine.submit([], SamplingParams())
    for bad, match in [(dict(max_tokens=0), "max_tokens"), (dict(temperature=3), "temperature"),
                       (dict(top_p=0), "top_p"), (dict(stop=("a",) * 5), "stop"), (dict(stop=("",)), "stop")]:
        with pytest.raises(ValueError, match=match):
            SamplingParams(**bad)


def test_many_threads_submitting_at_once_each_get_their_own_answer(engine, prompts):
    expected = [engine.generate(p, SamplingParams(max_tokens=8, temperature=0))[0] for p in prompts]
    got: dict[int, str] = {}

    def client(i: int) -> None:
        got[i] = engine.generate(prompts[i % 4], SamplingParams(max_tokens=8, temperature=0))[0]

    threads = [threading.Thread(target=client, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sorted(got) == list(range(12))
    assert [got[i] for i in range(12)] == [expected[i % 4] for i in range(12)]


@pytest.mark.parametrize(("text", "stop", "n"), [("Hello Pa", "Paris", 2), ("Hello", "Paris", 0),
                                                  ("abcab", "abc", 2), ("P", "Paris", 1), ("", "x", 0)])
def test_overlap_is_the_longest_tail_that_may_grow_into_the_stop_string(text, stop, n):
    assert _overlap(text, stop) == n


def test_event_defaults():
    assert Event("x") == Event("x", None, 0, "")
