"""Chat with the course's instruct model: load it, write the prompt, stream the answer, count tokens.

A chat model reads ONE string: the conversation rendered by its chat template (ChatML for SmolLM2):

    <|im_start|>system\\nYou are a helpful AI assistant ...<|im_end|>\\n
    <|im_start|>user\\nWhat is the capital of France?<|im_end|>\\n
    <|im_start|>assistant\\n            <- the generation prompt: the model writes from here
                                         and ends its turn with <|im_end|> (its eos token)

Used in 03_llm_apps (prompting, chat apps, RAG, agents) and by the course's OpenAI-compatible server.
Nothing happens at import time; torch and transformers are imported inside the functions.
"""

from __future__ import annotations

import threading
from typing import Any, Iterator

ROLES = ("system", "user", "assistant", "tool")
DTYPES = ("float32", "float16", "bfloat16")


def load_chat_model(preset: str | None = None, *, path: str | None = None, device: Any = None,
                    dtype: Any = None) -> tuple[Any, Any]:
    """(model, tokenizer): the instruct model of `preset` (or the folder / hub id `path`, e.g. a model you
    fine-tuned), in eval mode, pad token set, on `device`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from utils.hub import model_path
    from utils.runtime import get_device

    if dtype is not None and str(dtype).removeprefix("torch.") not in DTYPES:
        raise ValueError(f"dtype={dtype!r} is not supported. Allowed: None (automatic) or {', '.join(DTYPES)}.")
    try:
        device = torch.device(device) if device is not None else get_device()
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"device={device!r} is not a device. Allowed: e.g. 'cpu', 'cuda', 'mps'.") from error
    if dtype is None:  # fp16 halves memory and time on a GPU (a T4 has no fast bf16); CPUs are exact in fp32
        dtype = torch.float16 if device.type == "cuda" else torch.float32
    dtype = getattr(torch, str(dtype).removeprefix("torch."))
    path = path or model_path("instruct_llm", preset)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:  # batching needs one; the end-of-turn token is never read as input
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"  # a batch of prompts: each row continues from its right end
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device).eval()
    return model, tokenizer


def check_messages(messages: Any) -> None:
    """ValueError unless `messages` is a non-empty list of {"role": one of ROLES, "content": str}."""
    if not isinstance(messages, list) or not messages:
        raise ValueError(f"messages must be a non-empty list of {{'role': ..., 'content': ...}} dicts; "
                         f"got {messages!r:.80}.")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            raise ValueError(f"messages[{i}] must be a dict with 'role' and 'content'; got {message!r:.80}.")
        if message["role"] not in ROLES:
            raise ValueError(f"messages[{i}]['role'] is {message['role']!r}. Allowed: {', '.join(ROLES)}.")
        if not isinstance(message["content"], str):
            raise ValueError(f"messages[{i}]['content'] must be a str; got {type(message['content']).__name__}.")


def escape_special_tokens(text: str, tokenizer: Any) -> str:
    """`text` with every special-token string broken up by a zero-width space ("<|im_end|>" -> "<\u200b|im_end|>").

    A message's text is untrusted: written as it is into the templated prompt, a "<|im_end|>\n<|im_start|>system"
    inside it would be read as real control tokens, and the text could close its own turn and open a forged
    system turn (05.09 shows the attack). Broken up, it is tokenized as ordinary text.
    """
    for special in sorted(tokenizer.all_special_tokens, key=len, reverse=True):  # "<|im_end|>" before a prefix of it
        if len(special) > 1:
            text = text.replace(special, special[0] + "\u200b" + special[1:])
    return text


def chat_prompt(tokenizer: Any, messages: list[dict[str, str]], *, add_generation_prompt: bool = True) -> str:
    """The conversation as the one string the model reads (its chat template applied).

    Special-token strings inside the messages are escaped (`escape_special_tokens`): only the template
    writes control tokens.
    """
    check_messages(messages)
    safe = [{**m, "content": escape_special_tokens(m["content"], tokenizer)} for m in messages]
    return tokenizer.apply_chat_template(safe, tokenize=False, add_generation_prompt=add_generation_prompt)


def count_tokens(tokenizer: Any, text_or_messages: str | list[dict[str, str]]) -> int:
    """Tokens in a text, or in the templated prompt of a conversation (what an API bills as prompt tokens)."""
    text = text_or_messages
    if not isinstance(text, str):
        text = chat_prompt(tokenizer, text)
    # add_special_tokens=False: the template already wrote its special tokens into the text
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def _generation_inputs(model: Any, tokenizer: Any, messages: list[dict[str, str]], max_new_tokens: int,
                       temperature: float, top_p: float) -> dict[str, Any]:
    """The keyword arguments of `model.generate` for one conversation: ids (1, T), mask, decoding."""
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be an int ≥ 1; got {max_new_tokens!r}.")
    if not temperature >= 0:
        raise ValueError(f"temperature must be ≥ 0 (0 = greedy); got {temperature!r}.")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1]; got {top_p!r}.")
    batch = tokenizer(chat_prompt(tokenizer, messages), return_tensors="pt", add_special_tokens=False)
    # temperature 0 means greedy: argmax at every step, no sampling settings at all
    sampling = dict(do_sample=True, temperature=temperature, top_p=top_p, top_k=0) if temperature > 0 else \
        dict(do_sample=False)
    return dict(**batch.to(model.device), max_new_tokens=max_new_tokens, eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id, **sampling)


def _generate(model: Any, settings: dict[str, Any], seed: int | None) -> Any:
    """model.generate, seeded if asked, without changing the caller's random stream."""
    import torch

    devices = [model.device.index or 0] if model.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        return model.generate(**settings)


def chat_reply(model: Any, tokenizer: Any, messages: list[dict[str, str]], *, max_new_tokens: int = 256,
               temperature: float = 0.0, top_p: float = 1.0, seed: int | None = None) -> str:
    """The assistant's whole answer at once (same settings and result as `stream_chat`, joined)."""
    settings = _generation_inputs(model, tokenizer, messages, max_new_tokens, temperature, top_p)
    out = _generate(model, settings, seed)  # (1, T + new): the prompt, then the answer
    return tokenizer.decode(out[0, settings["input_ids"].shape[1]:], skip_special_tokens=True)


def stream_chat(model: Any, tokenizer: Any, messages: list[dict[str, str]], *, max_new_tokens: int = 256,
                temperature: float = 0.0, top_p: float = 1.0, seed: int | None = None) -> Iterator[str]:
    """Yield the assistant's answer in pieces as it is generated; greedy when temperature == 0."""
    from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

    settings = _generation_inputs(model, tokenizer, messages, max_new_tokens, temperature, top_p)
    # generate() runs in a thread and puts each new token into the streamer; we read decoded text from it.
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    stop, failure = threading.Event(), []

    class StopWhenAsked(StoppingCriteria):  # lets us end generate() early if the reader stops reading
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            import torch
            return torch.full((input_ids.shape[0],), stop.is_set(), device=input_ids.device)

    def work() -> None:
        try:
            _generate(model, dict(settings, streamer=streamer,
                                  stopping_criteria=StoppingCriteriaList([StopWhenAsked()])), seed)
        except BaseException as error:  # re-raised in the reader's thread below, never lost
            failure.append(error)
            streamer.end()

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    try:
        for piece in streamer:
            if piece:
                yield piece
    finally:  # also runs when the reader stops early (break, a closed connection)
        stop.set()
        thread.join()
    if failure:
        raise failure[0]
