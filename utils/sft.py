"""Supervised fine-tuning (SFT) of a chat model to a new, checkable answer format.

The behaviour taught in 03_llm_apps/08_instruction_tuning.ipynb: asked a question about Python, answer in two lines,

    Answer: <one sentence>
    Source: <the pydoc help topic that answers it>

The training pairs come from `utils.data.load("python_docs_queries", split="test")`: each hand-written question has
an evidence quote copied from the help topic that answers it, so the target is `Answer: <quote>\\nSource: <topic>`.
`parse_reply` is the automatic check (a strict regular expression), `score_replies` turns replies into rates,
`generate_replies` decodes many conversations at once (greedy, left-padded batches), and `merge_and_save` folds a
LoRA adapter into the weights and writes a plain model folder that `start_llm_server(model=...)` can serve.

Introduced in 03_llm_apps/08_instruction_tuning.ipynb. Nothing happens at import time; torch is imported inside.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

# The whole reply, nothing before or after (surrounding whitespace aside): one line of answer, one topic name.
# pydoc topic names are lower-case words joined by hyphens ("attribute-access", "typesseq").
ANSWER_PATTERN = re.compile(r"Answer: (?P<answer>[^\n]*\S[^\n]*)\nSource: (?P<source>[a-z][a-z0-9-]*)")


def _check_item(item: Any) -> None:
    """ValueError unless `item` is a python_docs_queries item: query, non-empty relevant and evidence lists."""
    if not isinstance(item, dict) or not all(key in item for key in ("query", "relevant", "evidence")):
        raise ValueError(f"an item must be a dict with 'query', 'relevant' and 'evidence'; got {item!r:.80}.")
    if not item["relevant"] or not item["evidence"]:
        raise ValueError(f"item {item.get('id', item['query'])!r} has no relevant topic or no evidence quote.")


def answer_target(item: dict[str, Any]) -> str:
    """The reply the model should learn for one item: its first evidence quote and its first relevant topic."""
    _check_item(item)
    answer = " ".join(item["evidence"][0].split())  # one line: the quotes may wrap
    return f"Answer: {answer}\nSource: {item['relevant'][0]}"


def question_messages(item: dict[str, Any], system: str | None = None) -> list[dict[str, str]]:
    """The conversation that asks an item's question: [system,] user (no format instruction in it)."""
    _check_item(item)
    messages = [{"role": "system", "content": system}] if system is not None else []
    return messages + [{"role": "user", "content": item["query"]}]


def sft_example(item: dict[str, Any], system: str | None = None) -> dict[str, list[dict[str, str]]]:
    """One conversational prompt/completion example, trl's format: {"prompt": messages, "completion": [reply]}."""
    return {"prompt": question_messages(item, system),
            "completion": [{"role": "assistant", "content": answer_target(item)}]}


def split_items(items: list[dict[str, Any]], n_held_out: int, seed: int = 0) -> tuple[list, list]:
    """(train, held_out): a seeded shuffle, then the first `n_held_out` items are held out for evaluation."""
    if not isinstance(n_held_out, int) or not 0 < n_held_out < len(items):
        raise ValueError(f"n_held_out must be an int in [1, {len(items) - 1}] for {len(items)} items; "
                         f"got {n_held_out!r}.")
    shuffled = list(items)
    random.Random(seed).shuffle(shuffled)
    return shuffled[n_held_out:], shuffled[:n_held_out]


def parse_reply(reply: str) -> tuple[str, str] | None:
    """(answer, source) if the reply is exactly `Answer: ...\\nSource: <topic>`, else None."""
    if not isinstance(reply, str):
        raise ValueError(f"reply must be a str; got {type(reply).__name__}.")
    match = ANSWER_PATTERN.fullmatch(reply.strip())
    return (match["answer"].strip(), match["source"]) if match else None


def score_replies(replies: list[str], items: list[dict[str, Any]]) -> dict[str, float]:
    """Rates over the items: `format` (the reply parses) and `source` (it parses AND names a relevant topic)."""
    if len(replies) != len(items) or not items:
        raise ValueError(f"need one reply per item and at least one item; got {len(replies)} replies "
                         f"for {len(items)} items.")
    parsed = [parse_reply(reply) for reply in replies]
    n_format = sum(p is not None for p in parsed)
    n_source = sum(p is not None and p[1] in item["relevant"] for p, item in zip(parsed, items))
    return {"format": n_format / len(items), "source": n_source / len(items), "n": len(items)}


def generate_replies(model: Any, tokenizer: Any, conversations: list[list[dict[str, str]]], *,
                     max_new_tokens: int = 64, batch_size: int = 16) -> list[str]:
    """Greedy replies to many conversations, `batch_size` at a time (left-padded, so each row continues at its end)."""
    import torch

    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be an int ≥ 1; got {max_new_tokens!r}.")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int ≥ 1; got {batch_size!r}.")
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    was_training = model.training
    model.eval()
    replies = []
    try:
        for start in range(0, len(conversations), batch_size):
            prompts = [tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True)
                       for c in conversations[start:start + batch_size]]
            # add_special_tokens=False: the template already wrote every special token
            batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
            with torch.no_grad():
                out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                     pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
            new = out[:, batch["input_ids"].shape[1]:]  # (B, new): the replies, after the padded prompts
            replies += tokenizer.batch_decode(new, skip_special_tokens=True)
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return replies


def merge_and_save(model: Any, tokenizer: Any, folder: str | Path) -> Path:
    """Fold a peft LoRA adapter into the weights (W + (alpha/r) B A) and save a plain model folder (safetensors)."""
    folder = Path(folder)
    if not hasattr(model, "merge_and_unload"):
        raise ValueError(f"model must be a peft model with a LoRA adapter; got {type(model).__name__}.")
    # A plain LlamaForCausalLM again, no adapter layers left. (The course's packaged model is a normal float32
    # folder, converted once from its GGUF file by utils.packaged_llm, so it saves like any other model.)
    merged = model.merge_and_unload()
    merged.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder
