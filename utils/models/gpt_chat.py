"""The course GPT as a chat model: a byte-level BPE tokenizer with ChatML's special tokens and chat template, and a
model folder that `transformers` (and so the course's OpenAI-compatible server) loads like any other.

A chat model reads one string, the conversation rendered by its chat template (ChatML, as SmolLM2's):

    <|im_start|>user\\nWhat does pass do?<|im_end|>\\n<|im_start|>assistant\\n    <- the model writes from here,
                                                                               and ends its turn with <|im_end|>

The three special tokens get ids 0, 1, 2 (before the 256 bytes and the merges), so they are single tokens that
ordinary text can never produce, and `<|im_end|>` is the stop token of generation.
Introduced in 05_frontier/04_chatgpt_from_scratch.ipynb. Nothing happens at import time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

END_OF_TEXT, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = (END_OF_TEXT, IM_START, IM_END)  # ids 0, 1, 2
# ChatML, as a Jinja template (what `tokenizer.apply_chat_template` runs): one block per message, then the
# assistant's header when the model is to answer.
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")


def train_chat_tokenizer(texts: list[str], vocab_size: int) -> Any:
    """A byte-level BPE tokenizer (GPT-2's recipe) trained on `texts`, with ChatML's tokens and template, as a
    `transformers.PreTrainedTokenizerFast` (eos = <|im_end|>, pad = <|endoftext|>)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    minimum = len(SPECIAL_TOKENS) + 256  # the special tokens and every byte: any text can be encoded
    if not isinstance(vocab_size, int) or vocab_size < minimum:
        raise ValueError(f"vocab_size must be an int >= {minimum} (3 special tokens + 256 bytes); got {vocab_size!r}")
    if not texts or not all(isinstance(t, str) for t in texts):
        raise ValueError("texts must be a non-empty list of strings")
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)  # bytes -> printable, split words
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    core.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=core, eos_token=IM_END, pad_token=END_OF_TEXT,
                                   bos_token=END_OF_TEXT, chat_template=CHATML_TEMPLATE)


def save_chat_model(model: Any, tokenizer: Any, folder: str | Path) -> Path:
    """Write our GPT as a `GPT2LMHeadModel` (safetensors) with its tokenizer into `folder`: a model folder that
    `utils.chat.load_chat_model(path=folder)` and `start_llm_server(model=str(folder))` take. Returns the folder."""
    from utils.models.gpt import to_hf_gpt2

    if len(tokenizer) != model.config.vocab_size:
        raise ValueError(f"the tokenizer has {len(tokenizer)} tokens but the model's vocab_size is "
                         f"{model.config.vocab_size}: they must be equal")
    if tokenizer.chat_template is None or tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer needs a chat template and an eos token (see train_chat_tokenizer)")
    hf = to_hf_gpt2(model).eval()
    # Generation (and the server's engine) stops at the end of the assistant's turn: <|im_end|>, not GPT-2's id.
    for settings in (hf.config, hf.generation_config):
        settings.eos_token_id, settings.pad_token_id = tokenizer.eos_token_id, tokenizer.pad_token_id
        settings.bos_token_id = tokenizer.bos_token_id
    folder = Path(folder)
    hf.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder
