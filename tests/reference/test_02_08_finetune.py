"""02.08's from-scratch pieces against the libraries: metrics vs scikit-learn, collate vs
DataCollatorWithPadding, freezing and tokenising on tiny local models (no training, no downloads)."""

from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, f1_score
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import (BertConfig, BertForSequenceClassification, DataCollatorWithPadding, DistilBertConfig,
                          DistilBertForSequenceClassification, EvalPrediction, PreTrainedTokenizerFast)

from utils.notebooks import notebook_definitions

NOTEBOOK = Path(__file__).resolve().parents[2] / "02_transformers" / "08_fine_tuning_and_transfer_learning.ipynb"
ns = notebook_definitions(NOTEBOOK)
WORDS = "the film was dull brilliant plot ending a waste of time ten out go and see it".split()


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer built in memory, with [CLS] … [SEP] framing like a BERT tokenizer."""
    vocab = {token: i for i, token in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", *WORDS])}
    core = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]",
                                                        special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="[PAD]", unk_token="[UNK]",
                                   cls_token="[CLS]", sep_token="[SEP]")


def random_reviews(rng: np.random.Generator, n: int) -> dict:
    return {"text": [" ".join(rng.choice(WORDS, int(rng.integers(1, 30)))) for _ in range(n)],
            "label": rng.integers(0, 2, n).tolist()}


def tiny_distilbert(n_layers: int = 2) -> DistilBertForSequenceClassification:
    torch.manual_seed(0)
    return DistilBertForSequenceClassification(DistilBertConfig(
        vocab_size=30, dim=8, n_layers=n_layers, n_heads=2, hidden_dim=16, max_position_embeddings=32, num_labels=2))


# ------------------------------------------------------------------------------------- compute_metrics
@pytest.mark.parametrize("seed", range(20))
def test_compute_metrics_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 60))
    logits = rng.standard_normal((n, 2)) + rng.standard_normal() * 2 * np.array([1.0, -1.0])  # often one-sided
    labels = rng.integers(0, 2, n) if seed % 4 else np.zeros(n, dtype=int)  # some cases: no positive label
    predictions = logits.argmax(axis=-1)
    for eval_pred in ((logits, labels), EvalPrediction(predictions=logits, label_ids=labels)):
        got = ns["compute_metrics"](eval_pred)
        assert set(got) == {"accuracy", "f1"}
        assert got["accuracy"] == pytest.approx(accuracy_score(labels, predictions), abs=1e-12)
        assert got["f1"] == pytest.approx(f1_score(labels, predictions, zero_division=0), abs=1e-12)


def test_compute_metrics_f1_is_zero_without_positive_predictions():
    logits, labels = np.array([[2.0, 0.0], [1.0, -1.0]]), np.array([1, 0])
    assert ns["compute_metrics"]((logits, labels)) == {"accuracy": 0.5, "f1": 0.0}


# ------------------------------------------------------------------------------------- pad_collate
@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_pad_collate_equals_data_collator_with_padding(tokenizer, padding_side):
    rng = np.random.default_rng(0)
    tokenizer.padding_side = padding_side
    reference = DataCollatorWithPadding(tokenizer)
    for _ in range(20):
        batch = random_reviews(rng, int(rng.integers(1, 9)))
        encoded = tokenizer(batch["text"])
        features = [{"input_ids": ids, "attention_mask": mask, "label": label}
                    for ids, mask, label in zip(encoded["input_ids"], encoded["attention_mask"], batch["label"])]
        ours, theirs = ns["pad_collate"](features, tokenizer.pad_token_id, padding_side), reference(features)
        assert set(ours) == set(theirs) == {"input_ids", "attention_mask", "labels"}
        for key in ours:
            assert ours[key].dtype == theirs[key].dtype, key
            assert torch.equal(ours[key], theirs[key]), key
    tokenizer.padding_side = "right"


def test_pad_collate_without_labels_and_bad_side():
    batch = ns["pad_collate"]([{"input_ids": [5, 6, 7]}, {"input_ids": [8]}], pad_token_id=0)
    assert set(batch) == {"input_ids", "attention_mask"}
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    with pytest.raises(ValueError, match="padding_side"):
        ns["pad_collate"]([{"input_ids": [1]}], pad_token_id=0, padding_side="middle")


# ------------------------------------------------------------------------------------- tokenize_reviews
def test_tokenize_reviews_truncates_and_passes_labels(tokenizer):
    batch = random_reviews(np.random.default_rng(1), 12)
    out = ns["tokenize_reviews"](batch, tokenizer, max_length=8)
    expected = tokenizer(batch["text"], truncation=True, max_length=8)
    assert out["input_ids"] == expected["input_ids"] and out["attention_mask"] == expected["attention_mask"]
    assert out["label"] == batch["label"]
    assert max(len(ids) for ids in out["input_ids"]) <= 8
    assert all(ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id for ids in out["input_ids"])


# ------------------------------------------------------------------------------------- freezing
def test_freeze_except_leaves_only_the_head_trainable():
    model = tiny_distilbert()
    head = ("pre_classifier", "classifier")
    n = ns["freeze_except"](model, head)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {f"{m}.{kind}" for m in head for kind in ("weight", "bias")}
    assert n == sum(p.numel() for m in head for p in getattr(model, m).parameters())
    assert ns["count_parameters"](model) == (n, sum(p.numel() for p in model.parameters()))
    ids = torch.randint(0, 30, (3, 7))
    model(input_ids=ids, labels=torch.tensor([0, 1, 0])).loss.backward()
    assert all(p.grad is None for name, p in model.named_parameters() if name not in trainable)
    assert all(p.grad is not None for name, p in model.named_parameters() if name in trainable)


def test_freeze_except_matches_whole_module_names_only():
    model = tiny_distilbert()
    ns["freeze_except"](model, ("classifier",))  # must not unfreeze pre_classifier
    assert {name for name, p in model.named_parameters() if p.requires_grad} == {"classifier.weight", "classifier.bias"}
    ns["freeze_except"](model, ("distilbert.transformer.layer.1", "classifier"))  # a nested module works too
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(name.startswith(("distilbert.transformer.layer.1.", "classifier.")) for name in trainable)


def test_freeze_except_on_bert_and_unknown_names():
    torch.manual_seed(0)
    bert = BertForSequenceClassification(BertConfig(vocab_size=30, hidden_size=8, num_hidden_layers=1,
                                                    num_attention_heads=2, intermediate_size=16, num_labels=2))
    n = ns["freeze_except"](bert, ("bert.pooler", "classifier"))
    assert n == 8 * 8 + 8 + 8 * 2 + 2  # pooler dense (8×8 + 8) and classifier (8×2 + 2)
    with pytest.raises(ValueError, match="no parameter"):
        ns["freeze_except"](bert, ("head_that_does_not_exist",))


# ------------------------------------------------------------------------------------- mean pooling, lr
def test_mean_pooling_ignores_padding():
    torch.manual_seed(0)
    hidden, mask = torch.randn(3, 6, 4), torch.tensor([[1] * 6, [1, 1, 1, 0, 0, 0], [1, 0, 0, 0, 0, 0]])
    expected = torch.stack([hidden[i, : int(mask[i].sum())].mean(dim=0) for i in range(3)])
    torch.testing.assert_close(ns["mean_pooling"](hidden, mask), expected)


def test_width_scaled_lr():
    assert ns["width_scaled_lr"](5e-5, 768) == pytest.approx(5e-5)
    assert ns["width_scaled_lr"](5e-5, 32) == pytest.approx(5e-5 * 24)


def test_llrd_param_groups_on_bert_names():
    torch.manual_seed(0)
    bert = BertForSequenceClassification(BertConfig(vocab_size=30, hidden_size=8, num_hidden_layers=3,
                                                    num_attention_heads=2, intermediate_size=16, num_labels=2))
    groups = notebook_definitions(NOTEBOOK, solutions=True)["llrd_param_groups"](bert, 1.0, 0.5)
    lr_of = {id(p): group["lr"] for group in groups for p in group["params"]}
    assert sum(len(group["params"]) for group in groups) == len(list(bert.parameters())) == len(lr_of)
    for name, p in bert.named_parameters():
        if name.startswith("bert.embeddings."):
            assert lr_of[id(p)] == 0.5 ** 4, name
        elif name.startswith("bert.encoder.layer."):
            assert lr_of[id(p)] == 0.5 ** (3 - int(name.split(".")[3])), name
        else:  # pooler and classifier
            assert lr_of[id(p)] == 1.0, name
