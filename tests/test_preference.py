"""utils.preference: hand-computed values and the ValueErrors (the trl comparisons are in tests/reference/)."""

from __future__ import annotations

import math

import pytest
import torch

from utils.preference import dpo_loss, grpo_advantages, reward_metrics, sequence_logprobs


def test_dpo_loss_by_hand():
    # log-ratios: chosen 1.0 - 0.0 = 1, rejected -1.0 - 0.0 = -1; beta 0.5 -> loss = -log sigmoid(1)
    loss, rc, rr = dpo_loss(torch.tensor([1.0]), torch.tensor([-1.0]), torch.tensor([0.0]), torch.tensor([0.0]),
                            beta=0.5)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-1.0)))
    assert rc.item() == pytest.approx(0.5) and rr.item() == pytest.approx(-0.5)


def test_dpo_loss_is_log2_when_policy_equals_reference():
    x = torch.randn(5)
    loss, _, _ = dpo_loss(x, x - 1, x, x - 1, beta=0.1)
    assert loss.item() == pytest.approx(math.log(2))


def test_reward_metrics_by_hand():
    m = reward_metrics(torch.tensor([1.0, 0.0, 2.0]), torch.tensor([0.0, 0.0, 3.0]))
    assert m == pytest.approx({"rewards/chosen": 1.0, "rewards/rejected": 1.0,
                               "rewards/accuracies": 1 / 3, "rewards/margins": 0.0})


def test_grpo_advantages_by_hand():
    r = torch.tensor([1.0, 0.0, 0.0, 1.0, 2.0, 2.0, 2.0, 2.0])
    adv = grpo_advantages(r, 4, scale="none")
    torch.testing.assert_close(adv, torch.tensor([0.5, -0.5, -0.5, 0.5, 0.0, 0.0, 0.0, 0.0]))
    std = torch.tensor([1.0, 0.0, 0.0, 1.0]).std().item()  # unbiased: sqrt(1/3)
    adv = grpo_advantages(r, 4, scale="group")
    assert adv[0].item() == pytest.approx(0.5 / (std + 1e-4))
    assert (adv[4:] == 0).all()  # a group where every answer scored the same carries no signal


def test_sequence_logprobs_by_hand():
    logits = torch.zeros(1, 3, 4)  # uniform over 4 tokens: every token has log p = log 1/4
    mask = torch.tensor([[0, 1, 1]])
    assert sequence_logprobs(logits, torch.tensor([[0, 1, 2]]), mask).item() == pytest.approx(2 * math.log(0.25))


@pytest.mark.parametrize("call", [
    lambda: dpo_loss(torch.zeros(2), torch.zeros(2), torch.zeros(2), torch.zeros(2), beta=0.0),
    lambda: dpo_loss(torch.zeros(2), torch.zeros(3), torch.zeros(2), torch.zeros(2)),
    lambda: grpo_advantages(torch.zeros(6), 4),
    lambda: grpo_advantages(torch.zeros(4), 4, scale="std"),
    lambda: grpo_advantages(torch.zeros(4), 1),
    lambda: sequence_logprobs(torch.zeros(1, 3, 4), torch.zeros(1, 2, dtype=torch.long), torch.zeros(1, 2)),
    lambda: reward_metrics(torch.zeros(2), torch.zeros(3)),
])
def test_bad_arguments_raise_value_error(call):
    with pytest.raises(ValueError):
        call()
