"""05.09's green-list watermark from scratch (utils.watermark) against transformers 5: the green lists == those of
`WatermarkLogitsProcessor`, the watermarked logits == its output, the z-scores and green counts == `WatermarkDetector`
on random token ids (several γ, keys, lengths, repeated tokens), and generation with our processor == generation
with `watermarking_config` on a tiny random Llama."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, LogitsProcessorList, WatermarkDetector, WatermarkingConfig
from transformers.generation.logits_process import WatermarkLogitsProcessor

from utils.watermark import HASH_KEY, GreenLists, WatermarkProcessor, count_green, detect, green_list, z_score

V = 1000  # a small vocabulary keeps randperm cheap


@pytest.mark.parametrize("gamma, key", [(0.25, HASH_KEY), (0.5, 7), (0.1, 123_457)])
def test_green_lists_equal_transformers(gamma, key):
    proc = WatermarkLogitsProcessor(V, "cpu", greenlist_ratio=gamma, hashing_key=key)
    for prev in [0, 1, 17, 999, 523]:
        theirs = proc._get_greenlist_ids(torch.tensor([5, prev]))
        ours = green_list(prev, V, gamma, key)
        assert torch.equal(ours, theirs)
        assert len(ours) == int(V * gamma)
    assert not torch.equal(green_list(3, V), green_list(4, V))  # the list really depends on the previous token


@pytest.mark.parametrize("delta", [0.5, 2.0])
def test_processor_equals_transformers(delta):
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, V, (4, 9), generator=gen)
    scores = torch.randn(4, V, generator=gen)
    theirs = WatermarkLogitsProcessor(V, "cpu", greenlist_ratio=0.25, bias=delta)(ids, scores)
    ours = WatermarkProcessor(GreenLists(V, 0.25), delta)(ids, scores)
    torch.testing.assert_close(ours, theirs)
    half = WatermarkProcessor(GreenLists(V, 0.25), delta, rows=[0, 2])(ids, scores)  # rows 1 and 3 stay plain
    torch.testing.assert_close(half[[0, 2]], theirs[[0, 2]])
    torch.testing.assert_close(half[[1, 3]], scores[[1, 3]])


def detector(gamma: float, key: int = HASH_KEY) -> WatermarkDetector:
    config = LlamaConfig(vocab_size=V, bos_token_id=V - 1)
    return WatermarkDetector(config, "cpu", WatermarkingConfig(greenlist_ratio=gamma, hashing_key=key))


@pytest.mark.parametrize("gamma", [0.25, 0.5])
@pytest.mark.parametrize("length", [2, 10, 60])
def test_z_scores_equal_watermark_detector(gamma, length):
    gen = torch.Generator().manual_seed(length)
    ids = torch.randint(0, 50, (5, length), generator=gen)  # few distinct tokens: repeated bigrams are counted
    out = detector(gamma)(ids, return_dict=True)
    lists = GreenLists(V, gamma)
    counts = np.array([count_green(row.tolist(), lists) for row in ids])
    np.testing.assert_array_equal(counts[:, 0], out.num_tokens_scored)
    np.testing.assert_array_equal(counts[:, 1], out.num_green_tokens)
    np.testing.assert_allclose([detect(row.tolist(), lists) for row in ids], out.z_score, rtol=1e-12)


def test_z_score_formula():
    assert z_score(25, 100, 0.25) == 0.0
    assert z_score(100, 100, 0.25) == pytest.approx(75 / np.sqrt(100 * 0.25 * 0.75))
    with pytest.raises(ValueError):
        z_score(1, 0)
    with pytest.raises(ValueError):
        green_list(1, V, gamma=1.0)


def test_generation_equals_watermarking_config():
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, bos_token_id=0, eos_token_id=1, pad_token_id=1)
    model = LlamaForCausalLM(config).eval()
    prompt = torch.randint(2, V, (2, 5))
    kwargs = dict(max_new_tokens=12, do_sample=True, top_k=0, min_new_tokens=12)
    torch.manual_seed(1)
    theirs = model.generate(prompt, watermarking_config=WatermarkingConfig(bias=4.0), **kwargs)
    torch.manual_seed(1)
    ours = model.generate(prompt, logits_processor=LogitsProcessorList([WatermarkProcessor(GreenLists(V), 4.0)]),
                          **kwargs)
    torch.manual_seed(1)
    plain = model.generate(prompt, **kwargs)
    assert torch.equal(ours, theirs)
    assert not torch.equal(ours, plain)
    lists = GreenLists(V)
    z_marked = [detect(row[4:].tolist(), lists) for row in ours]  # from the last prompt token on
    assert min(z_marked) > 2.0  # a random model has high entropy: δ = 4 makes nearly every token green
