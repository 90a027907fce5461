"""Conversation memory for a chatbot: which part of the history is sent to the model, within a token budget.

A chat API remembers nothing between requests: the client sends the whole conversation every turn. What it
sends is the memory policy. Three policies, each a function from the conversation and the new message to the
messages of the next request:

    full      system + every earlier turn + the new message          (grows without bound)
    window    system + the newest whole exchanges that fit the budget + the new message
    summary   like window, but the exchanges that fall out are folded, by the model itself, into a running
              summary that rides along in the system message

A turn is one message; an exchange is a user message and the assistant's answer, dropped or folded together
so that the roles keep alternating. Budgets count the tokens of the templated prompt (`utils.chat.count_tokens`
with the model's tokenizer), which is what the model reads and an API bills.

Introduced in 03_llm_apps/03_chatbot_app.ipynb (written there from scratch); used by utils/chatbot_app.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

Message = dict[str, str]
Count = Callable[[list[Message]], int]  # tokens of a templated conversation, e.g. partial(count_tokens, tokenizer)
Summarise = Callable[[str, list[Message]], str]  # (summary so far, turns to fold in) -> the new summary

POLICIES = ("full", "window", "summary")
SUMMARY_HEADER = "Summary of the earlier conversation:"
SUMMARY_INSTRUCTION = ("Write an updated summary of the conversation in one or two sentences. Keep every name, "
                       "number and fact the user gave.")


@dataclass
class Conversation:
    """One chat: its system prompt, every turn so far (oldest first) and the running summary."""

    system: str
    turns: list[Message] = field(default_factory=list)  # user, assistant, user, assistant, ...
    summary: str = ""  # the model's summary of turns[:summarised] ("" until something is folded)
    summarised: int = 0  # how many of the oldest turns the summary covers

    def add_exchange(self, user: str, assistant: str) -> None:
        """Append a user message and the assistant's answer."""
        self.turns += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]


def full_history(system: str, turns: list[Message], user: str) -> list[Message]:
    """Everything: the system prompt, every earlier turn, the new user message."""
    return [{"role": "system", "content": system}, *turns, {"role": "user", "content": user}]


def sliding_window(system: str, turns: list[Message], user: str, budget: int, count: Count) -> list[Message]:
    """The system prompt, the newest whole exchanges that fit in `budget` tokens, the new user message."""
    if len(turns) % 2:
        raise ValueError(f"turns must be whole exchanges (user, assistant pairs); got {len(turns)} messages.")
    start = 0
    while start < len(turns) and count(full_history(system, turns[start:], user)) > budget:
        start += 2  # drop the oldest exchange: a user message and its answer
    messages = full_history(system, turns[start:], user)
    if count(messages) > budget:
        raise ValueError(f"the system prompt and the new message alone take {count(messages)} tokens, more than "
                         f"the budget of {budget}: shorten them or raise the budget.")
    return messages


def with_summary(system: str, summary: str) -> str:
    """The system prompt with the running summary appended (unchanged while there is none)."""
    return f"{system}\n\n{SUMMARY_HEADER} {summary}".strip() if summary else system


def summary_memory(conversation: Conversation, user: str, budget: int, count: Count,
                   summarise: Summarise) -> list[Message]:
    """A sliding window whose dropped exchanges are folded into `conversation.summary` (which it updates)."""
    while True:
        system = with_summary(conversation.system, conversation.summary)
        recent = conversation.turns[conversation.summarised:]
        messages = sliding_window(system, recent, user, budget, count)
        dropped = len(recent) - (len(messages) - 2)  # the window keeps len(messages) - 2 of the recent turns
        if dropped == 0:
            return messages
        # One model call folds the exchanges that fell out into the summary. A longer summary makes the system
        # message longer, so the window is measured again: the loop ends when nothing more falls out.
        conversation.summary = summarise(conversation.summary, recent[:dropped]).strip()
        conversation.summarised += dropped


def transcript(turns: list[Message]) -> str:
    """Turns as plain text, one `Role: content` line each (how the summariser reads them)."""
    return "\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in turns)


def summary_request(summary: str, turns: list[Message]) -> list[Message]:
    """The messages that ask a chat model to fold `turns` into `summary`."""
    so_far = summary or "(nothing yet)"
    return [{"role": "system", "content": "You write short, factual summaries of conversations."},
            {"role": "user", "content": f"Summary so far: {so_far}\n\nNew part of the conversation:\n"
                                        f"{transcript(turns)}\n\n{SUMMARY_INSTRUCTION}"}]


def prompt_messages(conversation: Conversation, user: str, policy: str, budget: int, count: Count,
                    summarise: Summarise | None = None) -> list[Message]:
    """The messages of the next request under `policy` (one of POLICIES)."""
    if policy not in POLICIES:
        raise ValueError(f"policy={policy!r} is not a memory policy. Allowed: {', '.join(POLICIES)}.")
    if not isinstance(budget, int) or budget < 1:
        raise ValueError(f"budget must be a positive number of tokens; got {budget!r}.")
    if policy == "full":
        return full_history(conversation.system, conversation.turns, user)
    if policy == "window":
        return sliding_window(conversation.system, conversation.turns, user, budget, count)
    if summarise is None:
        raise ValueError("the summary policy needs a summarise(summary, turns) function that calls the model.")
    return summary_memory(conversation, user, budget, count, summarise)
