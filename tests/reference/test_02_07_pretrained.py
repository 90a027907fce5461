"""02.07's by-hand pieces against the libraries: fill-mask, greedy loops, teacher forcing, attention masks,
mean pooling and the GPT-2 parameter formula — on the offline stand-ins and the real all-MiniLM-L6-v2."""

import pytest
import torch
from transformers import (AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM, AutoModelForSeq2SeqLM,
                          AutoTokenizer, GPT2Config, GPT2LMHeadModel, pipeline)

from utils.hub import model_path
from utils.notebooks import notebook_definitions
from utils.runtime import repo_root

NOTEBOOK = repo_root() / "02_transformers" / "07_pretrained_models_bert_gpt_t5.ipynb"
CLASSES = {"bert": AutoModelForMaskedLM, "gpt2": AutoModelForCausalLM, "t5": AutoModelForSeq2SeqLM}


@pytest.fixture(scope="module")
def nb():
    return notebook_definitions(NOTEBOOK, solutions=True)


@pytest.fixture(scope="module")
def family():
    """key -> (path, tokenizer, eager model) for the three offline stand-ins (random weights)."""
    loaded = {}
    for key, cls in CLASSES.items():
        path = model_path(key, preset="smoke")
        loaded[key] = (path, AutoTokenizer.from_pretrained(path),
                       cls.from_pretrained(path, attn_implementation="eager").eval())
    return loaded


def test_fill_mask_by_hand_equals_the_pipeline(nb, family):
    path, tok, bert = family["bert"]
    fill = pipeline("fill-mask", model=path, device="cpu")
    for text in (f"The capital of France is {tok.mask_token}.", f"{tok.mask_token} sat on the mat."):
        probs, ids = nb["fill_mask_by_hand"](bert, tok, text, 4)
        expected = fill(text, top_k=4)
        assert ids.tolist() == [c["token"] for c in expected]
        torch.testing.assert_close(probs, torch.tensor([c["score"] for c in expected]), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="exactly one"):
        nb["fill_mask_by_hand"](bert, tok, "no mask here", 4)


def test_greedy_decode_equals_generate(nb, family):
    _, tok, gpt2 = family["gpt2"]
    for prompt in ("Hello there", "def main():\n    return"):
        ids = tok(prompt, return_tensors="pt")["input_ids"]
        expected = gpt2.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=9, do_sample=False,
                                 pad_token_id=tok.pad_token_id)
        assert torch.equal(nb["greedy_decode"](gpt2, ids, 9, tok.eos_token_id), expected)


def test_seq2seq_greedy_decode_equals_generate(nb, family):
    _, tok, t5 = family["t5"]
    for text in ("translate English to German: That is good.", "summarize: short text"):
        src = tok([text], return_tensors="pt")
        expected = t5.generate(**src, max_new_tokens=8, do_sample=False, num_beams=1)
        assert torch.equal(nb["greedy_decode_seq2seq"](t5, src["input_ids"], src["attention_mask"], 8), expected)


def test_shift_right_and_teacher_forced_loss(nb, family):
    _, tok, t5 = family["t5"]
    labels = torch.tensor([[5, 6, 7, 1, -100, -100], [8, 9, 10, 11, 12, 1]])
    ours = nb["shift_right"](labels, t5.config.decoder_start_token_id, t5.config.pad_token_id)
    assert torch.equal(ours, t5.prepare_decoder_input_ids_from_labels(labels=labels))
    src = tok(["translate English to German: That is good."] * 2, return_tensors="pt")
    with torch.no_grad():
        loss = t5(**src, labels=labels).loss
        logits = t5(**src, decoder_input_ids=ours).logits
    torch.testing.assert_close(torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten()), loss)


def test_masks_are_the_models_masks(nb, family):
    key_padding, decoder_self, agree = nb["key_padding_mask"], nb["decoder_self_mask"], nb["mask_agreement"]
    g = torch.Generator().manual_seed(0)
    batch = nb["random_padded_batch"]
    (_, _, bert), (_, _, gpt2), (_, _, t5) = family["bert"], family["gpt2"], family["t5"]
    for S, T in ((7, 4), (13, 9), (3, 11)):
        ids, att = batch(g, 1000, 3, S)
        tgt, tgt_att = batch(g, 1000, 3, T)
        with torch.no_grad():
            run = t5(input_ids=ids, attention_mask=att, decoder_input_ids=tgt, decoder_attention_mask=tgt_att,
                     output_attentions=True)
            cases = [(key_padding(att), bert(input_ids=ids, attention_mask=att, output_attentions=True).attentions),
                     (decoder_self(att), gpt2(input_ids=ids, attention_mask=att, output_attentions=True).attentions),
                     (key_padding(att), run.encoder_attentions), (decoder_self(tgt_att), run.decoder_attentions),
                     (key_padding(att, T), run.cross_attentions)]
        for mask, attentions in cases:
            leaks, coverage = agree(mask, attentions)
            assert leaks == 0 and coverage > 0.99
    # the check can fail: BERT's mask claimed for GPT-2 leaks nothing but loses coverage; the reverse leaks
    ids, att = batch(g, 1000, 2, 8)
    with torch.no_grad():
        gpt2_att = gpt2(input_ids=ids, attention_mask=att, output_attentions=True).attentions
        bert_att = bert(input_ids=ids, attention_mask=att, output_attentions=True).attentions
    assert agree(key_padding(att), gpt2_att)[1] < 0.8
    assert agree(decoder_self(att), bert_att)[0] > 0


def test_mask_builders_by_definition(nb):
    att = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    causal = nb["causal_mask"](4)
    assert torch.equal(causal, torch.tensor([[i >= j for j in range(4)] for i in range(4)]))
    pad = nb["key_padding_mask"](att)
    assert pad.shape == (2, 4, 4) and not pad[0, :, 3].any() and pad[1].all()
    assert nb["key_padding_mask"](att, 6).shape == (2, 6, 4)
    assert torch.equal(nb["decoder_self_mask"](att), causal & pad)


def test_prefix_lm_mask_solution(nb):
    att = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]])
    prefix = nb["prefix_lm_mask"]
    assert torch.equal(prefix(att, torch.tensor([0, 0])), nb["decoder_self_mask"](att))  # no prefix: GPT
    assert torch.equal(prefix(att, torch.tensor([4, 5])), nb["key_padding_mask"](att))   # all prefix: BERT
    mask = prefix(att, torch.tensor([2, 3]))
    assert mask[0, 0, 1] and not mask[0, 0, 2] and not mask[0, 4, 4]  # row 0: prefix of 2, key 4 is padding
    assert mask[1, 0, 2] and not mask[1, 0, 3] and mask[1, 4, 4]  # row 1: prefix of 3, no padding


def test_sequence_log_prob_solution(nb, family):
    _, _, t5 = family["t5"]
    g = torch.Generator().manual_seed(1)
    src, src_mask = nb["random_padded_batch"](g, 1000, 3, 9)
    tgt, tgt_mask = nb["random_padded_batch"](g, 1000, 3, 6)
    ours = nb["sequence_log_prob"](t5, src, src_mask, tgt, tgt_mask)
    for b in range(3):
        n, s = int(tgt_mask[b].sum()), int(src_mask[b].sum())
        with torch.no_grad():
            loss = t5(input_ids=src[b:b + 1, :s], labels=tgt[b:b + 1, :n]).loss
        torch.testing.assert_close(ours[b], -loss * n, rtol=1e-4, atol=1e-4)


def test_top_k_by_cosine_solution(nb):
    torch.manual_seed(0)
    docs, query = torch.randn(30, 8) * torch.rand(30, 1) * 10, torch.randn(8)
    cosines = torch.nn.functional.cosine_similarity(docs, query[None], dim=-1)
    assert torch.equal(nb["top_k_by_cosine"](query, docs, 5), cosines.argsort(descending=True)[:5])


def test_mean_pooling_equals_sentence_transformers(nb):
    from sentence_transformers import SentenceTransformer

    path = model_path("embedding", preset="smoke")  # the real all-MiniLM-L6-v2, shipped in a package
    sentences = ["A man is playing a guitar.", "Hi.", "The stock market fell sharply today, again and again."]
    expected = SentenceTransformer(path, device="cpu").encode(sentences, convert_to_tensor=True)
    tok, model = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()
    batch = tok(sentences, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    ours = torch.nn.functional.normalize(nb["mean_pooling"](hidden, batch["attention_mask"]), dim=-1)
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-5)
    naive = torch.nn.functional.normalize(hidden.mean(dim=1), dim=-1)
    assert (naive[1] - expected[1]).abs().max() > 1e-3  # the padded sentence: the mask matters


def test_gpt2_parameter_formula(nb, family):
    n_params, formula = nb["n_params"], nb["gpt2_param_count"]
    assert formula(family["gpt2"][2].config) == n_params(family["gpt2"][2])
    for config in (GPT2Config(), GPT2Config(n_embd=64, n_layer=3, n_head=4, n_inner=100, vocab_size=77)):
        with torch.device("meta"):
            model = GPT2LMHeadModel(config)
        assert formula(config) == n_params(model)
    assert formula(GPT2Config()) == 124_439_808  # GPT-2 small, the "124M"


def test_mlm_mask_solution_rates_and_invariants(nb):
    gen = torch.Generator().manual_seed(0)
    B, T, V, mask_id = 400, 50, 1000, 4
    ids = torch.randint(5, V, (B, T), generator=gen)
    special = torch.zeros(B, T, dtype=torch.bool)
    special[:, 0] = special[:, -1] = True
    ids[special] = 1
    before = ids.clone()
    inputs, labels = nb["mlm_mask"](ids, special.long(), mask_id, V, gen)
    assert torch.equal(ids, before)
    selected = labels != -100
    assert not selected[special].any() and torch.equal(labels[selected], ids[selected])
    assert torch.equal(inputs[~selected], ids[~selected])
    n = int(selected.sum())
    assert abs(n / int((~special).sum()) - 0.15) < 0.01
    assert abs(int((inputs[selected] == mask_id).sum()) / n - 0.8) < 0.03
    assert abs(int((inputs[selected] == ids[selected]).sum()) / n - 0.1) < 0.02


def test_cls_pooling_solution(nb):
    hidden = torch.randn(3, 5, 4)
    assert torch.equal(nb["cls_pooling"](hidden, torch.ones(3, 5)), hidden[:, 0])
