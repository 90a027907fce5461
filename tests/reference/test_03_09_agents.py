"""03.09's agent history as OpenAI messages (`fc_messages`) == what LangChain sends for the same conversation.

The notebook writes the function-calling transcript by hand: each tool call an assistant message with
`tool_calls`, each observation a `tool` message, unusable output as assistant text followed by the error as a
user turn. langchain-openai converts its own message objects to the same OpenAI dicts before a request.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from utils.notebooks import notebook_definitions

NOTEBOOK = Path(__file__).resolve().parents[2] / "03_llm_apps" / "09_agents_and_tool_use.ipynb"


def test_fc_messages_match_langchain_openai():
    pytest.importorskip("langchain_openai")
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
    from langchain_openai.chat_models.base import _convert_message_to_dict

    nb = notebook_definitions(NOTEBOOK)
    Step = nb["Step"]
    history = [(Step("search_docs", {"query": "nonlocal"}), "[nonlocal#0] The nonlocal statement ..."),
               (Step(None, {}, "Action: nothing", error="no Action"), "Error: no Action"),
               (Step("write_file", {"path": "a.txt", "content": "ü ✓"}), "wrote 5 bytes to a.txt")]
    ours = nb["fc_messages"]("What does nonlocal do?", history, "You are an agent.")

    def call(i: int, name: str, args: dict) -> AIMessage:
        return AIMessage("", tool_calls=[{"name": name, "args": args, "id": f"call_{i}"}])

    theirs = [SystemMessage("You are an agent."), HumanMessage("What does nonlocal do?"),
              call(0, "search_docs", {"query": "nonlocal"}),
              ToolMessage("[nonlocal#0] The nonlocal statement ...", tool_call_id="call_0"),
              AIMessage("Action: nothing"), HumanMessage("Error: no Action"),
              call(2, "write_file", {"path": "a.txt", "content": "ü ✓"}),
              ToolMessage("wrote 5 bytes to a.txt", tool_call_id="call_2")]
    expected = [_convert_message_to_dict(m) for m in theirs]
    assert len(ours) == len(expected)
    for mine, reference in zip(ours, expected):
        if "tool_calls" in reference:  # arguments are JSON text: compare them parsed, not as strings
            for a, b in zip(mine["tool_calls"], reference["tool_calls"]):
                assert json.loads(a["function"].pop("arguments")) == json.loads(b["function"].pop("arguments"))
        assert mine == reference
