"""benchmarks/grpo_kl.py (05.03's GRPO with / without KL): the reward, the completion mask, and one short run."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "grpo_kl.py"
spec = importlib.util.spec_from_file_location("grpo_kl", SCRIPT)
grpo_kl = importlib.util.module_from_spec(spec)
spec.loader.exec_module(grpo_kl)


def test_mask_stops_after_the_first_end_and_reward_is_exact():
    ids = torch.tensor([grpo_kl.encode("64;7"), grpo_kl.encode("6;;4"), grpo_kl.encode("6477"), grpo_kl.encode("07;;")])
    completion, mask = ids, grpo_kl.completion_mask(ids)
    assert mask.tolist() == [[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1], [1, 1, 1, 0]]
    rewards = grpo_kl.rewards_of([(23, 41), (2, 4), (23, 41), (3, 4)], completion, mask)
    assert rewards.tolist() == [1.0, 0.0, 0.0, 1.0]  # "6;" is not "06;", and no ";" means no answer


def test_sample_returns_the_mask_of_its_completions():
    model = grpo_kl.tiny_lm(0)
    completion, mask = grpo_kl.sample(model, grpo_kl.prompt_ids([(1, 2), (30, 40)] * 4))
    assert completion.shape == mask.shape == (8, 4)
    assert torch.equal(mask, grpo_kl.completion_mask(completion))


def test_a_short_run_prints_one_json_line_per_beta(capsys):
    results = grpo_kl.main(["--betas", "0", "0.5", "--seeds", "0", "--steps", "2", "--eval-every", "1",
                            "--base-acc", "0", "--prompts", "4", "--group", "4"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["beta"] for r in lines] == [0.0, 0.5] and lines == json.loads(json.dumps(results))
    for r in lines:
        assert [point[0] for point in r["curve"]] == [0, 1, 2] and r["sft_steps"] == 25
    assert lines[0]["curve"][0] == lines[1]["curve"][0]  # both betas start from the same base model
