"""utils.tool_calls: the tools check, the prompt, the <tool_call> grammar for each tool_choice, the "auto"
switch between free text and calls, and parsing into OpenAI-shaped calls.
"""

from __future__ import annotations

import json
import random

import jsonschema
import pytest
import torch

from utils.constrained import JsonConstraint, TokenVocabulary, sample_token
from utils.tool_calls import (AutoToolConstraint, parse_tool_calls, tool_call_grammar, tool_constraint,
                              tools_prompt, validate_tools)

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 10},
                                                    "unit": {"enum": ["C", "F"]}},
                   "required": ["city"], "additionalProperties": False}}}
ADD = {"type": "function", "function": {
    "name": "add", "parameters": {"type": "object", "required": ["a", "b"],
                                  "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}}}}
NOW = {"type": "function", "function": {"name": "now"}}  # no parameters: arguments must be {}
TOOLS = [WEATHER, ADD, NOW]
PARAMETERS = {t["function"]["name"]: t["function"].get("parameters", {"type": "object", "properties": {},
                                                                       "additionalProperties": False})
              for t in TOOLS}

CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
TWO_CALLS = CALL + '<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": -2}}\n</tool_call>'


def accepts(grammar, text: str) -> bool:
    state = grammar.start().feed(text)
    return state is not None and state.complete


@pytest.fixture(scope="module")
def vocab() -> TokenVocabulary:
    from transformers import GPT2Tokenizer

    from utils.data import offline_text

    tokenizer = GPT2Tokenizer().train_new_from_iterator(offline_text().splitlines(), vocab_size=1000)
    return TokenVocabulary.from_tokenizer(tokenizer)


def test_tools_are_checked_with_clear_errors() -> None:
    assert [t.name for t in validate_tools(TOOLS)] == ["get_weather", "add", "now"]
    bad = [
        ([], "non-empty list"),
        ([{"type": "code_interpreter"}], "tools[0] must be"),
        ([{"type": "function", "function": {"name": "get weather"}}], "letters, digits"),
        ([ADD, ADD], "new name"),
        ([{"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}}],
         "describe an object"),
        ([{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {
            "d": {"type": "string", "format": "date"}}}}}],
         "tools[0] (f) parameters: #/properties/d: keyword 'format'"),
        ([{"type": "function", "function": {"name": "f", "params": {}}}], "unknown keys ['params']"),
        ([{"type": "function", "function": {"name": "f", "description": 3}}], "description must be a string"),
    ]
    for tools, message in bad:
        with pytest.raises(ValueError) as info:
            validate_tools(tools)
        assert message in str(info.value), (message, str(info.value))


def test_prompt_lists_every_tool_and_the_format() -> None:
    prompt = tools_prompt(TOOLS)
    for tool in TOOLS:
        assert json.dumps(tool["function"]["name"]) in prompt
    assert "Current weather in a city" in prompt and '"maxLength": 10' in prompt
    assert "<tool_call>\n{\"name\": " in prompt and "\n</tool_call>" in prompt


def test_grammar_per_tool_choice() -> None:
    everything, single = tool_call_grammar(TOOLS), tool_call_grammar(TOOLS, parallel=False)
    named = tool_call_grammar(TOOLS, name="add")
    assert accepts(everything, CALL) and accepts(everything, TWO_CALLS)
    assert accepts(single, CALL) and not accepts(single, TWO_CALLS)
    add_call = TWO_CALLS[len(CALL):]
    assert not accepts(named, CALL) and accepts(named, add_call) and not accepts(named, add_call + add_call)
    assert accepts(everything, '<tool_call>\n{"name": "now", "arguments": {}}\n</tool_call>')
    for bad in ('<tool_call>\n{"name": "now", "arguments": {"x": 1}}\n</tool_call>',  # not in parameters
                '<tool_call>\n{"name": "add", "arguments": {"a": 1}}\n</tool_call>',  # b is required
                '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris, France"}}\n</tool_call>',
                '<tool_call>\n{"name": "send_mail", "arguments": {}}\n</tool_call>',
                '<tool_call>{"name": "now", "arguments": {}}</tool_call>', "", "Sure! " + CALL, CALL + "\n",
                CALL + "\n" + CALL):
        assert not accepts(everything, bad), bad
    with pytest.raises(ValueError, match="not among the tools"):
        tool_call_grammar(TOOLS, name="send_mail")


def test_random_walks_over_the_tool_grammar_parse_into_valid_calls() -> None:
    """No dead end, and every complete text parses into calls whose arguments match their schemas."""
    rng, grammar = random.Random(0), tool_call_grammar(TOOLS)
    for _ in range(60):
        state, text = grammar.start(), ""
        while not state.done and not (state.complete and rng.random() < .5):
            chars = state.next_chars()
            pool = sorted(chars) if chars is not None else list('ab "\\é1')
            options = [c for c in pool if state.feed(c) is not None]
            assert options, f"dead end after {text!r}"
            if len(text) > 300:
                options = [c for c in options if c in '"}]\n/tool_call>'] or options
            c = rng.choice(options)
            state, text = state.feed(c), text + c
        calls = parse_tool_calls(text)
        assert calls, text
        for call in calls:
            jsonschema.validate(json.loads(call["arguments"]), PARAMETERS[call["name"]])


def test_parse_tool_calls() -> None:
    assert parse_tool_calls(TWO_CALLS) == [{"name": "get_weather", "arguments": '{"city": "Paris"}'},
                                           {"name": "add", "arguments": '{"a": 1, "b": -2}'}]
    for not_calls in ("The weather is fine.", " " + CALL, CALL + " and then", "<tool_call>\n{oops}\n</tool_call>",
                      '<tool_call>\n{"name": "add"}\n</tool_call>', "<tool_call>\n[1]\n</tool_call>", ""):
        assert parse_tool_calls(not_calls) is None, not_calls


def test_tool_choice_gives_the_right_constraint(vocab: TokenVocabulary) -> None:
    assert tool_constraint(TOOLS, "none", vocab) is None
    assert isinstance(tool_constraint(TOOLS, "auto", vocab), AutoToolConstraint)
    assert isinstance(tool_constraint(TOOLS, "required", vocab), JsonConstraint)
    named = tool_constraint(TOOLS, {"type": "function", "function": {"name": "now"}}, vocab)
    assert accepts(named.grammar, '<tool_call>\n{"name": "now", "arguments": {}}\n</tool_call>')
    for bad in ("always", {"type": "function"}, {"type": "tool", "function": {"name": "now"}}, None):
        with pytest.raises(ValueError, match="tool_choice"):
            tool_constraint(TOOLS, bad, vocab)


def _generate(constraint, vocab: TokenVocabulary, logits_for, n: int = 300) -> str:
    text = ""
    for _ in range(n):
        if constraint.done:
            break
        token = sample_token(logits_for(text), temperature=0.0, constraint=constraint)
        constraint.advance(token)
        if token in vocab.eos_ids:
            break
        text += vocab.texts[token] or ""
    return text


def _push_towards(vocab: TokenVocabulary, target: str):
    """Logits that favour the tokens continuing `target` (a crude 'model' that wants to write it)."""
    def logits_for(text: str) -> torch.Tensor:
        logits = torch.zeros(len(vocab.texts))
        rest = target[len(text):] if target.startswith(text) else ""
        for i, t in enumerate(vocab.texts):
            if t and rest.startswith(t):
                logits[i] = 5.0 + len(t)
        if not rest:
            logits[sorted(vocab.eos_ids)] = 20.0
        return logits
    return logits_for


def test_auto_mode_free_text_or_calls(vocab: TokenVocabulary) -> None:
    free = tool_constraint(TOOLS, "auto", vocab)
    assert _generate(free, vocab, _push_towards(vocab, "The answer is 42.")) == "The answer is 42."
    assert free.mode == "free" and free.finished
    calls = tool_constraint(TOOLS, "auto", vocab)
    text = _generate(calls, vocab, _push_towards(vocab, CALL))
    assert calls.mode == "tools" and parse_tool_calls(text) == parse_tool_calls(CALL)
    # once the output starts with <tool_call>, it must be a call: a "model" that wants to chat is steered
    steered = tool_constraint(TOOLS, "auto", vocab)
    text = _generate(steered, vocab, _push_towards(vocab, "<tool_call>\nhello there"))
    assert steered.mode == "tools" and parse_tool_calls(text) is not None


def test_auto_constraint_steps(vocab: TokenVocabulary) -> None:
    c = tool_constraint(TOOLS, "auto", vocab)
    eos, lt = next(iter(vocab.eos_ids)), vocab.texts.index("<")
    assert c.allows(eos) and c.allows(lt)
    c.advance(lt)
    assert c.mode == "undecided" and c.eos_allowed
    for piece in ("tool_call>\n",):  # spell the rest character by character where tokens exist
        for ch in piece:
            c.advance(vocab.texts.index(ch))
    assert c.mode == "tools" and not c.eos_allowed and not c.allows(vocab.texts.index("x"))
    assert c.allowed_ids() == [i for i in range(len(vocab.texts)) if c.allows(i)]
    with pytest.raises(ValueError, match="not allowed"):
        c.advance(eos)
