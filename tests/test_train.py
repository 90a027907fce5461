"""Tests for utils.train: fit() learns, keeps an honest history, clips, schedules, rejects bad arguments."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from utils.train import evaluate, fit, warmup_cosine, warmup_cosine_schedule


class Regressor(nn.Module):
    """A linear model that follows the course contract: forward(x, targets) -> (output, loss)."""

    def __init__(self, n_in: int = 4, dropout: float = 0.0) -> None:
        super().__init__()
        self.linear = nn.Linear(n_in, 1)
        self.dropout = nn.Dropout(dropout)
        self.grad_enabled_in_forward: list[bool] = []

    def forward(self, x, targets=None):
        self.grad_enabled_in_forward.append(torch.is_grad_enabled())
        out = self.linear(self.dropout(x)).squeeze(-1)  # (B,)
        loss = None if targets is None else nn.functional.mse_loss(out, targets)
        return out, loss


class Classifier(nn.Module):
    """A small MLP classifier with the course contract."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, 32), nn.Tanh(), nn.Linear(32, 2))

    def forward(self, x, targets=None):
        logits = self.net(x)  # (B, 2)
        loss = None if targets is None else nn.functional.cross_entropy(logits, targets)
        return logits, loss


def regression_loaders(n: int = 256, batch_size: int = 32):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=g)
    y = x @ torch.tensor([1.5, -2.0, 0.5, 3.0]) + 0.7 + 0.01 * torch.randn(n, generator=g)
    train = DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=True, generator=g)
    test = DataLoader(TensorDataset(x[:64], y[:64]), batch_size=batch_size)
    return train, test


def test_fit_regression_loss_goes_down_a_lot():
    torch.manual_seed(0)
    model = Regressor()
    train, test = regression_loaders()
    before = evaluate(model, test)
    adam = torch.optim.Adam(model.parameters(), lr=0.05)
    history = fit(model, train, optimizer=adam, steps=200, device="cpu", progress=False)
    after = evaluate(model, test)
    assert before > 5.0  # the target has variance ~15, so an untrained model is far off
    assert after < 0.01 * before
    assert sum(history["train_loss"][-10:]) / 10 < 0.02 * history["train_loss"][0]


def test_fit_classification_learns_two_blobs():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    x = torch.cat([torch.randn(100, 2, generator=g) + 2, torch.randn(100, 2, generator=g) - 2])  # (200, 2)
    y = torch.cat([torch.zeros(100), torch.ones(100)]).long()
    loader = DataLoader(TensorDataset(x, y), batch_size=20, shuffle=True, generator=g)
    model = Classifier()
    sgd = torch.optim.SGD(model.parameters(), lr=0.1)
    history = fit(model, loader, optimizer=sgd, steps=100, progress=False)
    assert history["train_loss"][0] > 0.4
    assert history["train_loss"][-1] < 0.1
    with torch.no_grad():
        accuracy = (model(x)[0].argmax(-1) == y).float().mean().item()
    assert accuracy > 0.95


def test_history_lengths_and_eval_cadence():
    model = Regressor()
    train, test = regression_loaders(n=64, batch_size=16)  # 4 batches per pass: 25 steps cycle it 7 times
    history = fit(
        model, train, optimizer=torch.optim.SGD(model.parameters(), lr=0.01), steps=25,
        eval_loader=test, eval_every=10, progress=False,
    )
    assert set(history) == {"step", "train_loss", "lr", "eval_step", "eval_loss"}
    assert history["step"] == list(range(1, 26))
    assert len(history["train_loss"]) == len(history["lr"]) == 25
    assert history["eval_step"] == [10, 20, 25]  # every 10 steps, and at the end
    assert len(history["eval_loss"]) == 3
    assert all(isinstance(v, float) for v in history["train_loss"] + history["eval_loss"])


def test_eval_cadence_without_duplicates_and_end_only():
    train, test = regression_loaders(n=64, batch_size=16)
    model = Regressor()
    sgd = torch.optim.SGD(model.parameters(), lr=0.01)
    h = fit(model, train, optimizer=sgd, steps=20, eval_loader=test, eval_every=10, progress=False)
    assert h["eval_step"] == [10, 20]
    h = fit(model, train, optimizer=sgd, steps=7, eval_loader=test, progress=False)
    assert h["eval_step"] == [7]  # no eval_every: evaluate once, at the end
    h = fit(model, train, optimizer=sgd, steps=3, progress=False)
    assert h["eval_step"] == [] and h["eval_loss"] == []


def test_fit_leaves_eval_mode_and_evaluate_restores_mode_without_grad():
    model = Regressor(dropout=0.5)
    train, test = regression_loaders(n=64)
    fit(model, train, optimizer=torch.optim.SGD(model.parameters(), lr=0.01), steps=3, progress=True)
    assert not model.training
    model.train()
    model.grad_enabled_in_forward.clear()
    loss = evaluate(model, test, max_batches=1)
    assert model.training  # restored
    assert model.grad_enabled_in_forward == [False]  # one batch, under no_grad
    assert isinstance(loss, float)


def test_evaluate_weights_batches_by_size():
    model = Regressor()
    x, y = torch.randn(10, 4), torch.randn(10)
    full = evaluate(model, [(x, y)])
    uneven = evaluate(model, [(x[:7], y[:7]), (x[7:], y[7:])])  # batches of 7 and 3
    assert uneven == pytest.approx(full, rel=1e-5)


class RecordingSGD(torch.optim.SGD):
    """SGD that records the global gradient norm it is given at every step."""

    def __init__(self, params, lr):
        params = list(params)
        super().__init__(params, lr=lr)
        self.norms: list[float] = []

    def step(self, closure=None):
        grads = [p.grad for group in self.param_groups for p in group["params"] if p.grad is not None]
        self.norms.append(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])).item())
        return super().step(closure)


def test_grad_clip_bounds_the_gradient_norm():
    train, _ = regression_loaders()
    torch.manual_seed(0)
    model = Regressor()
    unclipped = RecordingSGD(model.parameters(), lr=1e-3)
    fit(model, train, optimizer=unclipped, steps=10, progress=False)
    assert max(unclipped.norms) > 1.0  # the gradients really are large here ...
    torch.manual_seed(0)
    model = Regressor()
    clipped = RecordingSGD(model.parameters(), lr=1e-3)
    fit(model, train, optimizer=clipped, steps=10, grad_clip=0.5, progress=False)
    assert max(clipped.norms) <= 0.5 + 1e-5  # ... and clipping caps every step's norm
    assert min(clipped.norms) > 0.49  # large gradients are scaled to the cap, not zeroed


def test_fit_uses_scheduler_and_records_lr_per_step():
    model = Regressor()
    train, _ = regression_loaders()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = warmup_cosine_schedule(optimizer, warmup_steps=5, total_steps=20)
    history = fit(model, train, optimizer=optimizer, steps=20, scheduler=scheduler, progress=False)
    expected = [0.1 * warmup_cosine(s, warmup_steps=5, total_steps=20) for s in range(20)]
    assert history["lr"] == pytest.approx(expected)
    assert history["lr"][0] == pytest.approx(0.1 / 6)  # warm-up starts small
    assert max(history["lr"]) == pytest.approx(0.1)


def test_warmup_cosine_known_points():
    kw = dict(warmup_steps=10, total_steps=110)
    assert warmup_cosine(0, **kw) == pytest.approx(1 / 11)  # ~0 at the start
    assert warmup_cosine(10, **kw) == pytest.approx(1.0)  # peak at the end of warm-up
    assert warmup_cosine(60, **kw) == pytest.approx(0.5)  # halfway through the cosine
    assert warmup_cosine(110, **kw) == pytest.approx(0.0)  # the end
    assert warmup_cosine(500, **kw) == pytest.approx(0.0)  # and it stays there
    assert warmup_cosine(60, **kw, min_ratio=0.1) == pytest.approx(0.55)
    assert warmup_cosine(110, **kw, min_ratio=0.1) == pytest.approx(0.1)
    assert warmup_cosine(0, warmup_steps=0, total_steps=10) == 1.0  # no warm-up


def test_warmup_cosine_is_monotone_in_each_piece():
    values = [warmup_cosine(s, warmup_steps=20, total_steps=100, min_ratio=0.1) for s in range(101)]
    warmup, decay = values[:21], values[20:]
    assert all(a < b for a, b in zip(warmup, warmup[1:]))
    assert all(a > b for a, b in zip(decay, decay[1:]))
    assert all(0.0 < v <= 1.0 for v in warmup)  # warm-up rises from ~0, below min_ratio at first
    assert all(0.1 - 1e-12 <= v <= 1.0 for v in decay)


def test_warmup_cosine_schedule_sets_optimizer_lr():
    param = nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=2.0)
    scheduler = warmup_cosine_schedule(optimizer, warmup_steps=4, total_steps=8)
    lrs = []
    for _ in range(9):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[4] == pytest.approx(2.0)
    assert lrs[6] == pytest.approx(2.0 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lrs[8] == pytest.approx(0.0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(steps=0), r"steps must be a positive integer.*got 0"),
        (dict(steps=-3), r"steps must be a positive integer.*got -3"),
        (dict(steps=2.5), r"steps must be a positive integer.*got 2.5"),
        (dict(steps=True), r"steps must be a positive integer.*got True"),
        (dict(steps=5, eval_every=0, eval_loader=[]), r"eval_every must be a positive integer.*got 0"),
        (dict(steps=5, eval_every=2), r"eval_every=2 needs an eval_loader"),
        (dict(steps=5, grad_clip=0.0), r"grad_clip must be a positive .*got 0.0"),
        (dict(steps=5, grad_clip=-1), r"grad_clip must be a positive .*got -1"),
    ],
)
def test_fit_rejects_bad_arguments(kwargs, match):
    model = Regressor()
    train, _ = regression_loaders(n=32)
    with pytest.raises(ValueError, match=match):
        fit(model, train, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), progress=False, **kwargs)


def test_fit_rejects_empty_loader_and_bad_batches():
    model = Regressor()
    sgd = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="yielded no batches"):
        fit(model, [], optimizer=sgd, steps=1, progress=False)
    with pytest.raises(ValueError, match=r"\(x, targets\) pair.*tuple of length 3"):
        fit(model, [(torch.randn(2, 4), torch.randn(2), 0)], optimizer=sgd, steps=1, progress=False)
    with pytest.raises(ValueError, match=r"\(x, targets\) pair.*Tensor"):
        fit(model, [torch.randn(2, 4)], optimizer=sgd, steps=1, progress=False)
    with pytest.raises(ValueError, match="max_batches must be a positive integer"):
        evaluate(model, [(torch.randn(2, 4), torch.randn(2))], max_batches=0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(step=-1, warmup_steps=1, total_steps=5), r"step must be an integer >= 0; got -1"),
        (dict(step=0, warmup_steps=-1, total_steps=5), r"warmup_steps must be an integer >= 0; got -1"),
        (dict(step=0, warmup_steps=5, total_steps=5),
         r"total_steps must be an integer > warmup_steps=5; got 5"),
        (dict(step=0, warmup_steps=1, total_steps=5, min_ratio=1.5),
         r"min_ratio must be between 0 and 1; got 1.5"),
    ],
)
def test_warmup_cosine_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        warmup_cosine(**kwargs)


def test_warmup_cosine_schedule_fails_early():
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match="total_steps"):
        warmup_cosine_schedule(optimizer, warmup_steps=10, total_steps=3)


@pytest.mark.parametrize("value, shown", [("1", False), ("true", False), ("0", True), ("", True)])
def test_tqdm_disable_hides_the_training_bar(monkeypatch, capsys, value, shown):
    # tqdm reads TQDM_DISABLE once, at import, and its notebook bar ignores it: fit() reads it itself.
    monkeypatch.setenv("TQDM_DISABLE", value)
    model = Regressor()
    train, _ = regression_loaders(n=64)
    fit(model, train, optimizer=torch.optim.SGD(model.parameters(), lr=0.01), steps=3)
    assert ("training: 100%" in capsys.readouterr().err) is shown
