"""utils.sft: the answer format and its check, the data split, batched greedy replies, merging a LoRA adapter.

The generation and merge tests use a tiny RANDOM Llama with the real SmolLM2 tokenizer (fast, offline): what they
check is plumbing (left padding, merged weights), which does not depend on the weights being trained.
"""

from __future__ import annotations

from typing import Any

import pytest

from utils import sft
from utils.data import load

ITEM = {"id": "q9", "query": "How do I re-raise?", "relevant": ["raise", "exceptions"],
        "evidence": ['The "from" clause is used\n   for exception chaining']}


# ----------------------------------------------------------------------------------- format and data
def test_the_target_is_two_lines_that_parse_back() -> None:
    target = sft.answer_target(ITEM)
    assert target == 'Answer: The "from" clause is used for exception chaining\nSource: raise'
    assert sft.parse_reply(target) == ('The "from" clause is used for exception chaining', "raise")


@pytest.mark.parametrize("reply", [
    "The answer is yes.",                                    # prose
    "Answer: yes",                                           # no source line
    "Answer: yes\nSource: raise\nMore text.",                # something after the source
    "Sure! Answer: yes\nSource: raise",                      # something before the answer
    "Answer: \nSource: raise",                               # an empty answer
    "Answer: yes\n\nSource: raise",                          # a blank line between
    "Answer: yes\nSource: the raise statement",              # not a topic name
    "answer: yes\nsource: raise",                            # the wrong case
])
def test_parse_reply_refuses_anything_but_the_exact_format(reply: str) -> None:
    assert sft.parse_reply(reply) is None


def test_parse_reply_ignores_surrounding_whitespace_only() -> None:
    assert sft.parse_reply("  Answer: It is 3.\nSource: attribute-access \n") == ("It is 3.", "attribute-access")


def test_score_replies_counts_format_and_relevant_source() -> None:
    items = [ITEM, {**ITEM, "relevant": ["try"]}, ITEM]
    replies = ["Answer: a\nSource: raise", "Answer: b\nSource: raise", "no format"]
    assert sft.score_replies(replies, items) == {"format": 2 / 3, "source": 1 / 3, "n": 3}
    with pytest.raises(ValueError, match="one reply per item"):
        sft.score_replies(replies[:2], items)


def test_examples_are_trl_prompt_completion_conversations() -> None:
    example = sft.sft_example(ITEM, system="Be brief.")
    assert [m["role"] for m in example["prompt"]] == ["system", "user"]
    assert example["completion"] == [{"role": "assistant", "content": sft.answer_target(ITEM)}]
    assert sft.question_messages(ITEM) == [{"role": "user", "content": ITEM["query"]}]
    with pytest.raises(ValueError, match="relevant topic"):
        sft.answer_target({**ITEM, "evidence": []})


def test_every_course_question_gives_a_parsable_target() -> None:
    items = load("python_docs_queries", split="test")
    parsed = [sft.parse_reply(sft.answer_target(item)) for item in items]
    assert all(p is not None and p[1] in item["relevant"] for p, item in zip(parsed, items))


def test_the_split_is_seeded_disjoint_and_complete() -> None:
    items = [{**ITEM, "id": f"q{i}"} for i in range(20)]
    train, held = sft.split_items(items, 5, seed=3)
    assert (len(train), len(held)) == (15, 5)
    assert sorted(x["id"] for x in train + held) == sorted(x["id"] for x in items)
    assert sft.split_items(items, 5, seed=3) == (train, held) and sft.split_items(items, 5, seed=4) != (train, held)
    with pytest.raises(ValueError, match="n_held_out"):
        sft.split_items(items, 20)


# ----------------------------------------------------------------------------------- models
@pytest.fixture(scope="module")
def tiny() -> tuple[Any, Any]:
    """(model, tokenizer): a random 2-layer Llama with the real SmolLM2 tokenizer and chat template."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from utils.hub import model_path

    tokenizer = AutoTokenizer.from_pretrained(model_path("instruct_llm", "smoke"))
    tokenizer.pad_token = tokenizer.eos_token
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    return LlamaForCausalLM(config).eval(), tokenizer


def test_batched_replies_equal_one_at_a_time(tiny: tuple[Any, Any]) -> None:
    model, tokenizer = tiny
    conversations = [[{"role": "user", "content": text}] for text in
                     ("Hi", "What does the with statement do in Python?", "Name three colours, please.")]
    tokenizer.padding_side = "right"  # what a trainer leaves behind: generate_replies must pad on the left anyway
    batched = sft.generate_replies(model, tokenizer, conversations, max_new_tokens=6, batch_size=3)
    alone = [sft.generate_replies(model, tokenizer, [c], max_new_tokens=6, batch_size=1)[0] for c in conversations]
    assert batched == alone and all(batched)  # left padding changes nothing (a right-padded batch would)
    assert tokenizer.padding_side == "right"  # and the caller's setting is restored
    with pytest.raises(ValueError, match="batch_size"):
        sft.generate_replies(model, tokenizer, conversations, batch_size=0)


def test_merge_and_save_gives_a_plain_model_with_the_adapters_outputs(tiny: tuple[Any, Any], tmp_path) -> None:
    import copy

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model, tokenizer = tiny
    peft_model = get_peft_model(copy.deepcopy(model), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    for name, parameter in peft_model.named_parameters():
        if "lora_B" in name:  # B starts at zero (the adapter is a no-op): make it do something
            torch.nn.init.normal_(parameter, std=0.5)
    x = torch.randint(0, len(tokenizer), (2, 7))
    with torch.no_grad():
        expected = peft_model(x).logits
        assert not torch.allclose(expected, model(x).logits, atol=1e-4)  # the adapter changes the outputs
    folder = sft.merge_and_save(peft_model, tokenizer, tmp_path / "merged")
    assert (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()
    reloaded = AutoModelForCausalLM.from_pretrained(folder).eval()
    assert not any("lora" in name for name, _ in reloaded.named_parameters())
    with torch.no_grad():
        torch.testing.assert_close(reloaded(x).logits, expected, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="peft model"):
        sft.merge_and_save(model, tokenizer, tmp_path / "plain")
