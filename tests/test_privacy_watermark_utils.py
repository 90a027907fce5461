"""utils.privacy and utils.watermark: argument checks and small behaviours (the library comparisons are in
tests/reference/test_05_09_dp_sgd.py and test_05_09_watermark.py)."""

from __future__ import annotations

import pytest
import torch

from utils.privacy import epsilon, per_sample_grads, poisson_batch, train_dp_sgd
from utils.watermark import GreenLists, WatermarkProcessor, count_green, detect, green_list


def test_per_sample_grads_rejects_mismatched_batches():
    with pytest.raises(ValueError, match="same number"):
        per_sample_grads(torch.nn.Linear(3, 2), torch.zeros(4, 3), torch.zeros(5, dtype=torch.long))


@pytest.mark.parametrize("rate", [0.0, 1.5])
def test_poisson_batch_rejects_bad_rates(rate):
    with pytest.raises(ValueError, match="sample_rate"):
        poisson_batch(10, rate)


def test_train_dp_sgd_rejects_bad_steps_and_records_batches():
    x, y = torch.randn(50, 3), torch.randint(0, 2, (50,))
    with pytest.raises(ValueError):
        train_dp_sgd(torch.nn.Linear(3, 2), x, y, steps=0, lr=0.1, sample_rate=0.2, max_grad_norm=1.0,
                     noise_multiplier=1.0)
    history = train_dp_sgd(torch.nn.Linear(3, 2), x, y, steps=5, lr=0.1, sample_rate=0.2, max_grad_norm=1.0,
                           noise_multiplier=1.0)
    assert len(history["batch_size"]) == 5


def test_epsilon_rejects_unknown_accountant_and_falls_with_noise():
    with pytest.raises(ValueError, match="accountant"):
        epsilon(1.0, 0.01, 100, 1e-5, accountant="gdp2")
    assert epsilon(2.0, 0.01, 100, 1e-5) < epsilon(1.0, 0.01, 100, 1e-5)


def test_watermark_argument_checks():
    with pytest.raises(ValueError, match="gamma"):
        GreenLists(100, gamma=0.0)
    with pytest.raises(ValueError, match="vocab_size"):
        green_list(1, 1)
    with pytest.raises(ValueError, match="delta"):
        WatermarkProcessor(GreenLists(100), delta=-1.0)
    with pytest.raises(ValueError, match="at least 2"):
        count_green([5], GreenLists(100))


def test_green_lists_remember_and_detect_a_fully_green_text():
    lists = GreenLists(500, gamma=0.25)
    assert int(lists.mask(7).sum()) == 125
    assert lists.mask(7) is lists.mask(7)  # computed once
    ids = [3]
    for _ in range(30):  # always pick a green successor: the z-score must be large
        ids.append(int(torch.nonzero(lists.mask(ids[-1]))[0]))
    assert detect(ids, lists) == pytest.approx((30 - 7.5) / (30 * 0.25 * 0.75) ** 0.5)
