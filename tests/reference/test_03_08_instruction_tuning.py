"""03.08's from-scratch pieces against the libraries, with the real SmolLM2 tokenizer and chat template.

The notebook's functions are imported without running it (`notebook_definitions`): the loss-masked labels of
`build_sft_batch` against the labels trl's SFTTrainer builds for the same prompt/completion examples (its dataset
preparation, then its data collator), over random batches with and without a system message, multi-turn prompts
and truncation; the masked mean against the model's own loss; the held-out loss and opening probability
against one-example-at-a-time computations; and the exercises' packed position ids (against trl's
collator) and assistant-only labels (against `apply_chat_template(..., return_assistant_tokens_mask=True)`).
The model is a tiny random Llama: the labels do not depend on the weights.
"""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest
import torch

from utils.data import load
from utils.notebooks import notebook_definitions
from utils.runtime import repo_root
from utils.sft import sft_example

NOTEBOOK = repo_root() / "03_llm_apps" / "08_instruction_tuning.ipynb"


@pytest.fixture(scope="module")
def nb():
    return notebook_definitions(NOTEBOOK, solutions=True)


@pytest.fixture(scope="module")
def tok():
    from transformers import AutoTokenizer

    from utils.hub import model_path

    tokenizer = AutoTokenizer.from_pretrained(model_path("instruct_llm", "smoke"))
    tokenizer.pad_token = tokenizer.eos_token  # as load_chat_model sets it
    return tokenizer


@pytest.fixture(scope="module")
def tiny_model(tok):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    return LlamaForCausalLM(config)


def _examples(n: int, seed: int) -> list[dict]:
    """Random prompt/completion examples: the course's questions, some with a system message or an earlier turn."""
    rng = random.Random(seed)
    items = rng.sample(load("python_docs_queries", split="test"), n)
    examples = []
    for item in items:
        kind = rng.randrange(3)
        system = "You answer questions about Python. Be brief." if kind == 1 else None
        example = sft_example(item, system=system)
        if kind == 2:  # a multi-turn prompt: an earlier exchange before the question
            example["prompt"] = [{"role": "user", "content": "Hi!"},
                                 {"role": "assistant", "content": "Hello. Ask me about Python."}] + example["prompt"]
        examples.append(example)
    return examples


def _trl_batch(tok, model, examples: list[dict], max_length: int, tmp_path) -> tuple[dict, int]:
    """trl's labels for `examples`: SFTTrainer's prepared dataset, collated by its collator; and how many it kept."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    args = SFTConfig(output_dir=str(tmp_path), max_length=max_length, completion_only_loss=True, report_to="none",
                     use_cpu=True, bf16=False, activation_checkpointing=False, dataloader_num_workers=0)
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(examples), processing_class=tok)
    dataset = trainer.train_dataset
    return trainer.data_collator([dataset[i] for i in range(len(dataset))]), len(dataset)


@pytest.mark.parametrize("seed, max_length", [(0, 128), (1, 1024), (2, 60), (3, 72)])
def test_labels_from_scratch_equal_trls(nb, tok, tiny_model, tmp_path, seed: int, max_length: int) -> None:
    examples = _examples(6, seed)
    # trl drops an example whose completion was truncated away entirely; the notebook's function keeps it, so the
    # comparison is on the examples that keep at least one completion token.
    kept = [e for e in examples if any(label != -100 for label in nb["tokenize_example"](tok, e, max_length)[1])]
    theirs, n_theirs = _trl_batch(tok, tiny_model, examples, max_length, tmp_path)
    ours = nb["build_sft_batch"](tok, kept, max_length)
    assert n_theirs == len(kept) > 0
    for key in ("input_ids", "attention_mask", "labels"):
        assert torch.equal(ours[key], theirs[key]), key
    assert (ours["labels"] != -100).sum() < ours["attention_mask"].sum()  # the prompt is masked
    if max_length < 128:
        assert ours["input_ids"].shape[1] == max_length  # truncation happened and matched trl's


def test_padding_is_masked_by_position_not_by_token(nb, tok) -> None:
    batch = nb["build_sft_batch"](tok, _examples(4, seed=5), 128)
    learned = batch["labels"] != -100
    # the pad token is <|im_end|>: each row's own final <|im_end|> must be learned, the padding after it must not
    assert (learned & (batch["input_ids"] == tok.eos_token_id)).sum(dim=1).tolist() == [1, 1, 1, 1]
    assert not (learned & (batch["attention_mask"] == 0)).any()


def test_the_masked_mean_is_the_models_loss(nb, tok, tiny_model) -> None:
    batch = nb["build_sft_batch"](tok, _examples(4, seed=6), 128)
    with torch.no_grad():
        out = tiny_model(**batch)
    nll = nb["token_losses"](out.logits, batch)  # (B, T-1)
    learned = batch["labels"][:, 1:] != -100
    torch.testing.assert_close(nll[learned].mean(), out.loss, rtol=1e-5, atol=1e-6)


def test_the_opening_probability_is_p_of_answer_colon_after_the_prompt(nb, tok, tiny_model, monkeypatch) -> None:
    # held_out_measures reads the running notebook's tok, cfg and device: give it this test's
    monkeypatch.setitem(nb, "tok", tok)
    monkeypatch.setitem(nb, "cfg", SimpleNamespace(max_length=128))
    monkeypatch.setitem(nb, "device", torch.device("cpu"))
    examples = _examples(5, seed=7)
    loss, p_open = nb["held_out_measures"](tiny_model, examples)
    opening = tok("Answer:", add_special_tokens=False)["input_ids"]  # two tokens: "Answer", ":"
    assert len(opening) == 2
    probabilities, total, count = [], 0.0, 0
    with torch.no_grad():
        for example in examples:  # one at a time, no padding: p(Answer | prompt) * p(: | prompt, Answer)
            prompt = tok.apply_chat_template(example["prompt"], tokenize=False, add_generation_prompt=True)
            prompt_ids = tok(prompt, add_special_tokens=False)["input_ids"]
            logp = tiny_model(input_ids=torch.tensor([prompt_ids + opening])).logits[0].log_softmax(-1)
            probabilities.append(logp[len(prompt_ids) - 1:-1].gather(1, torch.tensor(opening)[:, None]).sum().exp())
            ids, labels = nb["tokenize_example"](tok, example, 128)
            out = tiny_model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels]))
            n = sum(label != -100 for label in labels[1:])
            total, count = total + out.loss.item() * n, count + n
    assert p_open == pytest.approx(torch.stack(probabilities).mean().item(), rel=1e-4)
    assert loss == pytest.approx(total / count, rel=1e-4)


def test_packed_position_ids_equal_trls_collator(nb) -> None:
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    rng = random.Random(0)
    for _ in range(50):
        lengths = [rng.randint(1, 50) for _ in range(rng.randint(1, 8))]
        expected = DataCollatorForLanguageModeling.get_position_ids_from_packed_seq_lengths([lengths])[0]
        assert torch.equal(nb["packed_position_ids"](lengths), expected), lengths


def test_assistant_only_labels_equal_the_generation_mask(nb, tok) -> None:
    IGNORE = nb["IGNORE"]
    rng = random.Random(1)
    items = load("python_docs_queries", split="test")
    for _ in range(10):
        messages = [{"role": "system", "content": "Be brief."}] if rng.random() < 0.5 else []
        for _ in range(rng.randint(1, 3)):
            item = rng.choice(items)
            messages += [{"role": "user", "content": item["query"]},
                         {"role": "assistant", "content": rng.choice([item["evidence"][0], "Yes.", "a\nb"])}]
        out = tok.apply_chat_template(messages, chat_template=nb["TRAINING_TEMPLATE"],
                                      return_assistant_tokens_mask=True, return_dict=True)
        expected = [i if m else IGNORE for i, m in zip(out["input_ids"], out["assistant_masks"])]
        assert nb["assistant_only_labels"](tok, messages) == expected
