"""05.04's from-scratch pieces against the libraries: the SFT example's loss masking against Hugging Face's labels
convention, the notebook's `reply` against `utils.chat.chat_reply` on the converted model, and the exercises'
solutions against transformers / torch.

The notebook's functions are imported without running it (`notebook_definitions`); the globals they read
(`tokenizer`, `cfg`, `device`) are put into their namespace here, with a tiny tokenizer and config.
"""

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from utils.models.gpt import GPT, GPTConfig, to_hf_gpt2
from utils.models.gpt_chat import train_chat_tokenizer
from utils.notebooks import notebook_definitions

NOTEBOOK = Path(__file__).resolve().parents[2] / "05_frontier" / "04_chatgpt_from_scratch.ipynb"
ITEM = {"id": "t1", "query": "What does the pass statement do?", "relevant": ["pass"],
        "evidence": ["\"pass\" is a null operation — when it is executed,\n nothing happens."]}


@pytest.fixture(scope="module")
def nb():
    from utils.data import offline_text

    ns = notebook_definitions(NOTEBOOK, solutions=True)
    ns["tokenizer"] = train_chat_tokenizer([offline_text()[:60_000]], 400)
    ns["cfg"] = SimpleNamespace(block_size=96, batch_size=3)
    ns["device"] = torch.device("cpu")
    return ns


@pytest.fixture(scope="module")
def model(nb):
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=len(nb["tokenizer"]), block_size=96, n_layer=2, n_head=2, n_embd=32)).eval()


def test_sft_loss_equals_hf_loss_with_the_prompt_labels_masked(nb, model):
    tokenizer = nb["tokenizer"]
    ids, targets = nb["sft_example"](ITEM)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": ITEM["query"]}], tokenize=False,
                                           add_generation_prompt=True)
    n_prompt = len(tokenizer(prompt, add_special_tokens=False).input_ids)
    labels = torch.tensor([[-100] * n_prompt + ids[n_prompt:]])  # HF: labels = ids, prompt masked, it shifts itself
    x = torch.tensor([ids])
    ours = model(x, torch.tensor([targets]))[1]
    theirs = to_hf_gpt2(model).eval()(x, labels=labels).loss
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    assert tokenizer.decode(ids[n_prompt:]).endswith("<|im_end|>")


def test_sft_batches_pad_without_learning_the_padding(nb):
    x, y = next(nb["sft_batches"]([ITEM, {**ITEM, "query": "Why?"}], torch.Generator().manual_seed(0)))
    assert x.shape == y.shape and x.size(0) == 3
    pad = nb["tokenizer"].pad_token_id
    assert ((x == pad) <= (y == -100)).all(), "a padding position is never a target"


def test_reply_equals_chat_reply_on_the_converted_model(nb, model):
    from utils.chat import chat_reply

    messages = [{"role": "user", "content": ITEM["query"]}]
    with torch.no_grad():  # make <|im_end|> likely enough that the reply stops before the limit
        model.transformer.wte.weight[2] *= 3.0
    hf = to_hf_gpt2(model).eval()
    hf.generation_config.eos_token_id = hf.generation_config.pad_token_id = 2
    theirs = chat_reply(hf, nb["tokenizer"], messages, max_new_tokens=30)
    assert nb["reply"](model, messages, 30) == theirs


def test_exercise_solutions_equal_the_libraries(nb, model):
    from transformers.generation.logits_process import TopPLogitsWarper

    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        logits, p = torch.randn(3, 40, generator=g) * 4, torch.rand(1, generator=g).item()
        assert torch.equal(nb["nucleus"](logits, p), TopPLogitsWarper(top_p=p)(None, logits))
    x, y = next(nb["sft_batches"]([ITEM], g))
    logits = model(x)[0]
    expected = torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=-100)
    torch.testing.assert_close(nb["masked_loss"](logits, y), expected, rtol=1e-5, atol=1e-6)


def test_reply_logps_equal_hf_and_dpo_loss_starts_at_log_2(nb, model):
    tokenizer = nb["tokenizer"]
    examples = [nb["sft_example"](ITEM), nb["sft_example"](ITEM, "Answer: nothing.\nSource: pass")]
    x, y = nb["pad_batch"](examples)
    with torch.no_grad():
        ours = nb["reply_logps"](model, x, y)  # (2,)
        logits = to_hf_gpt2(model).eval()(x).logits  # HF's logits; log p of each row's learned targets, summed
    for row in range(2):
        learned = y[row] != -100
        expected = logits[row][learned].log_softmax(-1).gather(-1, y[row][learned][:, None]).sum()
        torch.testing.assert_close(ours[row], expected, rtol=1e-5, atol=1e-4)
    assert int((y[1] != -100).sum()) == len(tokenizer("Answer: nothing.\nSource: pass").input_ids) + 1
    loss, margins = nb["dpo_loss"](ours[:1], ours[1:], ours[:1], ours[1:], 0.1)  # policy == reference
    torch.testing.assert_close(loss, torch.log(torch.tensor(2.0)))
    assert margins.item() == 0.0
    loss, _ = nb["dpo_loss"](ours[:1] + 5.0, ours[1:], ours[:1], ours[1:], 0.1)  # the preferred reply got likelier
    assert loss < torch.log(torch.tensor(2.0))
