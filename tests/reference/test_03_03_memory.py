"""03.03's from-scratch memory policies against utils.chat_memory (the app's copy) and a brute-force window, with
the real tokenizer; the exercise solutions (pinned window, the byte-level event reader) against references."""

from __future__ import annotations

import json
import random
from functools import partial

import pytest

from utils import chat_memory
from utils.chat import count_tokens
from utils.notebooks import notebook_definitions
from utils.runtime import repo_root

NOTEBOOK = repo_root() / "03_llm_apps" / "03_chatbot_app.ipynb"
WORDS = "the dog cat list tuple Ingrid Python café 日本 loop value key error file names 3.14 !".split()


@pytest.fixture(scope="module")
def nb():
    return notebook_definitions(NOTEBOOK, solutions=True)


@pytest.fixture(scope="module")
def count():
    from transformers import AutoTokenizer

    from utils.hub import model_path

    return partial(count_tokens, AutoTokenizer.from_pretrained(model_path("instruct_llm", "smoke")))


def _text(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 25)))


def _turns(rng: random.Random, n: int) -> list[dict]:
    return [{"role": role, "content": _text(rng)} for _ in range(n) for role in ("user", "assistant")]


def _brute_force_window(system: str, turns: list[dict], user: str, budget: int, count) -> list[dict]:
    """The longest suffix of whole exchanges that fits, found by trying every length from the longest down."""
    for keep in range(len(turns), -1, -2):
        messages = [{"role": "system", "content": system}, *turns[len(turns) - keep:], {"role": "user", "content": user}]
        if count(messages) <= budget:
            return messages
    raise ValueError("nothing fits")


def test_the_notebook_defines_what_the_app_uses(nb):
    for name in ("full_history", "sliding_window", "summary_memory", "with_summary", "transcript", "summary_request",
                 "Conversation", "pinned_window", "read_events"):
        assert name in nb, f"{name} missing (skipped: {nb['__skipped__']})"
    assert (nb["SUMMARY_HEADER"], nb["SUMMARY_INSTRUCTION"]) == (chat_memory.SUMMARY_HEADER,
                                                                 chat_memory.SUMMARY_INSTRUCTION)


@pytest.mark.parametrize("seed", range(12))
def test_windows_agree_with_the_app_and_with_brute_force(nb, count, seed):
    rng = random.Random(seed)
    system, turns, user = _text(rng), _turns(rng, rng.randint(0, 8)), _text(rng)
    budget = rng.randint(count(nb["full_history"](system, [], user)), count(nb["full_history"](system, turns, user)))
    ours = nb["sliding_window"](system, turns, user, budget, count)
    assert ours == chat_memory.sliding_window(system, turns, user, budget, count)
    assert ours == _brute_force_window(system, turns, user, budget, count)
    assert nb["full_history"](system, turns, user) == chat_memory.full_history(system, turns, user)
    with pytest.raises(ValueError, match="alone take"):
        nb["sliding_window"](system, turns, user, count(nb["full_history"](system, [], user)) - 1, count)


@pytest.mark.parametrize("seed", range(6))
def test_summary_memory_agrees_with_the_app_turn_by_turn(nb, count, seed):
    rng = random.Random(seed)
    written = [_text(rng)[:40] for _ in range(200)]  # what the stand-in summariser "writes", in turn

    def summariser(start: int):
        texts = iter(written[start:])
        return lambda summary, turns: next(texts)

    system, budget = _text(rng), rng.randint(120, 260)
    ours, theirs = nb["Conversation"](system), chat_memory.Conversation(system)
    for turn in range(10):
        user, answer = _text(rng), _text(rng)
        mine = nb["summary_memory"](ours, user, budget, count, summariser(turn * 20))
        assert mine == chat_memory.summary_memory(theirs, user, budget, count, summariser(turn * 20))
        assert count(mine) <= budget
        assert (ours.summary, ours.summarised) == (theirs.summary, theirs.summarised)
        ours.add_exchange(user, answer)
        theirs.add_exchange(user, answer)
    assert ours.summarised > 0, "the budget should have made the conversation fold"
    assert nb["summary_request"]("S", ours.turns[:2]) == chat_memory.summary_request("S", ours.turns[:2])


@pytest.mark.parametrize("seed", range(6))
def test_the_pinned_window_keeps_the_first_message_and_the_budget(nb, count, seed):
    rng = random.Random(seed)
    system, turns, user = _text(rng), _turns(rng, rng.randint(2, 8)), _text(rng)
    budget = count(nb["full_history"](system, turns, user)) - rng.randint(0, 60)
    messages = nb["pinned_window"](system, turns, user, budget, count)
    assert count(messages) <= budget and messages[-1] == {"role": "user", "content": user}
    assert messages[0]["content"].startswith(system) and turns[0]["content"] in messages[0]["content"]
    kept = messages[1:-1]
    assert kept == turns[len(turns) - len(kept):] and len(kept) <= len(turns) - 2  # newest turns after the first


@pytest.mark.parametrize("seed", range(30))
def test_the_event_reader_reads_any_chunking_of_a_stream(nb, seed):
    rng = random.Random(seed)
    events = [{"type": "token", "text": _text(rng)} for _ in range(rng.randint(1, 6))]
    frames = []
    for event in events:
        data = json.dumps(event, ensure_ascii=False)
        comment = ": keep-alive\n" if rng.random() < 0.4 else ""
        frames.append(f"{comment}id: {rng.randint(0, 9)}\ndata: {data}\n\n" if rng.random() < 0.5 else
                      f"{comment}data:{data}\n\n")
    stream = "".join(frames).encode()
    cuts = sorted(rng.sample(range(1, len(stream)), k=min(len(stream) - 1, rng.randint(1, 30))))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)])]
    buffer, got = b"", []
    for chunk in chunks:
        buffer, new = nb["read_events"](buffer, chunk)
        got += new
    assert got == events and buffer == b""
