"""benchmarks/instruct_llm.py: its candidate configs are the real models' shapes, and it measures speed."""

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "instruct_llm.py"
spec = importlib.util.spec_from_file_location("instruct_llm_benchmark", SCRIPT)
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)

# Parameters of the real checkpoints (tied embeddings counted once): 135M counted on the packaged model,
# 360M as reported for the Hub checkpoint; 1.7B and Qwen2.5-1.5B (1.54 B, as its model card says) are the
# sums over their config.json shapes.
PUBLISHED = {"smollm2-135m": 134_515_008, "smollm2-360m": 361_821_120, "smollm2-1.7b": 1_711_376_384,
             "qwen2.5-1.5b": 1_543_714_304}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_each_candidate_has_the_real_models_shape(name: str) -> None:
    import torch

    model = bench.build(name, torch.bfloat16, device="meta")  # shapes only: no memory, no time
    assert sum(p.numel() for p in model.parameters()) == PUBLISHED[name]


@pytest.mark.slow
def test_measures_the_smallest_candidate(capsys: pytest.CaptureFixture[str]) -> None:
    [result] = bench.main(["candidates", "--models", "smollm2-135m", "--dtypes", "bfloat16",
                           "--prompt-tokens", "8", "--new-tokens", "3", "--repeats", "1"])
    assert result["params_m"] == 134.5 and result["weights_gb"] == 0.27 and result["tokens_per_s"] > 0
    assert capsys.readouterr().out.strip().startswith("{"), "one JSON line per result"
