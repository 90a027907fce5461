"""05.04's from-scratch pieces against the libraries: the SFT example's loss masking against Hugging Face's labels
convention, the notebook's `reply` against `utils.chat.chat_reply` on the converted model, its preference loss
(DPO + the SFT term on the chosen replies, through `utils.preference`) against trl's DPOTrainer on the same batch,
and the exercises' solutions against transformers / torch.

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


def _as_examples(ids: torch.Tensor, attention: torch.Tensor, mask: torch.Tensor) -> list:
    """trl's padded rows -> the notebook's (ids, targets) examples: a token of the reply is the target of its
    predecessor; prompt tokens and padding are never targets."""
    examples = []
    for row, n in zip(range(len(ids)), attention.sum(1).tolist()):
        targets = torch.where(mask[row, 1:n].bool(), ids[row, 1:n], -100).tolist() + [-100]
        examples.append((ids[row, :n].tolist(), targets))
    return examples


@pytest.mark.parametrize("beta,sft_weight", [(0.1, 1.0), (0.5, 0.3)])
def test_preference_loss_equals_trl_sigmoid_plus_sft(nb, tmp_path, monkeypatch, beta, sft_weight):
    """The notebook's DPO + λ·NLL (via utils.preference) == trl's DPOTrainer with loss_type ["sigmoid", "sft"]."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    tokenizer = nb["tokenizer"]
    torch.manual_seed(1)
    config = GPTConfig(vocab_size=len(tokenizer), block_size=96, n_layer=2, n_head=2, n_embd=32, dropout=0.0)
    policy, reference = GPT(config), GPT(config)
    reference.load_state_dict(policy.state_dict())
    with torch.no_grad():  # a reference that differs from the policy: the log-ratios are not all zero
        for p in reference.parameters():
            p.add_(0.05 * torch.randn_like(p))
    rows = [{"prompt": "What does pass do?", "chosen": " Nothing.", "rejected": " It loops over a list."},
            {"prompt": "Why use with?", "chosen": " To close files.", "rejected": " For the loop."},
            {"prompt": "What is a dict?", "chosen": " A mapping of keys to values.", "rejected": " A list."}]
    args = DPOConfig(output_dir=str(tmp_path), beta=beta, loss_type=["sigmoid", "sft"], loss_weights=[1.0, sft_weight],
                     per_device_train_batch_size=3, report_to=[], use_cpu=True, max_length=96)
    trainer = DPOTrainer(model=to_hf_gpt2(policy), ref_model=to_hf_gpt2(reference), args=args,
                         processing_class=tokenizer, train_dataset=Dataset.from_list(rows))
    inputs = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    trainer.model.train()
    with torch.no_grad():
        trl_loss = trainer._compute_loss(trainer.model, inputs, return_outputs=False)
    trl_metrics = {k: v[-1] for k, v in trainer._metrics["train"].items() if k.startswith("rewards/")}

    examples = _as_examples(inputs["input_ids"], inputs["attention_mask"], inputs["completion_mask"])
    monkeypatch.setitem(nb, "cfg", SimpleNamespace(block_size=96, batch_size=3, beta=beta, sft_weight=sft_weight))
    with torch.no_grad():  # trl's own two models (an HF model's output[0] is its logits): only the loss differs
        loss, ours = nb["preference_loss"](trainer.model, trainer.ref_model, examples[:3], examples[3:])
    assert abs(ours["rewards/margins"]) > 1e-4  # not a comparison of zeros
    torch.testing.assert_close(loss, trl_loss, rtol=1e-5, atol=1e-5)
    assert ours == pytest.approx(trl_metrics, abs=1e-5)
