"""Training: the course's one `fit()` loop, `evaluate()`, and the warm-up + cosine learning-rate schedule.

The model contract used everywhere in the course: `model(x, targets) -> (output, loss)`, and every
loader yields `(x, targets)` batches. Configs count optimizer **steps**, not epochs, so `fit()` cycles
the loader for as long as it needs to. Notebooks that teach the loop write it inline first.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from tqdm.auto import tqdm


def _positive_int(name: str, value: Any) -> int:
    # bool is a subclass of int, but `steps=True` is surely a mistake.
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer (1, 2, ...); got {value!r}.")
    return value


def _model_device(model: torch.nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a model without parameters)."""
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def _to_device(batch: Any, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Unpack an `(x, targets)` batch and move both halves to `device`."""
    # DataLoader turns a dataset's (x, y) tuples into a [x, y] list, so accept any pair.
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        got = type(batch).__name__
        if isinstance(batch, (tuple, list)):
            got = f"a {got} of length {len(batch)}"
        raise ValueError(f"A batch must be an (x, targets) pair; the loader yielded {got}.")
    x, targets = batch
    return x.to(device), targets.to(device)


def _tqdm_disabled() -> bool:
    """True when the environment says TQDM_DISABLE=1 (or true/yes/on).

    Read at each call: tqdm itself reads it only once, at import, and its notebook bar ignores it.
    """
    return os.environ.get("TQDM_DISABLE", "").strip().lower() in ("1", "true", "yes", "on")


def _forever(loader: Iterable) -> Iterator:
    """Yield batches from `loader` again and again (a shuffling DataLoader reshuffles every pass)."""
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise ValueError("The training loader yielded no batches; check the dataset and batch_size.")


def fit(
    model: torch.nn.Module,
    train_loader: Iterable,
    *,
    optimizer: torch.optim.Optimizer,
    steps: int,
    eval_loader: Iterable | None = None,
    eval_every: int | None = None,
    scheduler: Any = None,
    device: str | torch.device | None = None,
    grad_clip: float | None = None,
    progress: bool = True,
) -> dict[str, list]:
    """Train for `steps` optimizer steps, evaluating every `eval_every` and at the end; return the history.

    `progress=False`, or TQDM_DISABLE=1 in the environment, hides the progress bar.
    """
    _positive_int("steps", steps)
    if eval_every is not None:
        _positive_int("eval_every", eval_every)
        if eval_loader is None:
            raise ValueError(f"eval_every={eval_every} needs an eval_loader to evaluate on; got None.")
    if grad_clip is not None and not grad_clip > 0:
        raise ValueError(f"grad_clip must be a positive max gradient norm, or None; got {grad_clip!r}.")
    device = _model_device(model) if device is None else torch.device(device)
    history: dict[str, list] = {"step": [], "train_loss": [], "lr": [], "eval_step": [], "eval_loss": []}
    batches = _forever(train_loader)

    model.train()  # dropout etc. on; evaluate() switches to eval mode and back
    bar = tqdm(range(1, steps + 1), desc="training", disable=not progress or _tqdm_disabled())
    for step in bar:
        x, targets = _to_device(next(batches), device)
        _, loss = model(x, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip is not None:
            # Rescale all gradients together so that their global L2 norm is at most grad_clip.
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        lr = optimizer.param_groups[0]["lr"]  # the rate this step used, read before the scheduler moves it
        if scheduler is not None:
            scheduler.step()

        train_loss = loss.item()  # a Python float: the history holds no tensors (and no graphs)
        history["step"].append(step)
        history["train_loss"].append(train_loss)
        history["lr"].append(lr)
        bar.set_postfix(loss=f"{train_loss:.4f}")
        due = step == steps or (eval_every is not None and step % eval_every == 0)
        if eval_loader is not None and due:
            history["eval_step"].append(step)
            history["eval_loss"].append(evaluate(model, eval_loader, device))
            bar.set_postfix(loss=f"{train_loss:.4f}", eval_loss=f"{history['eval_loss'][-1]:.4f}")
    model.eval()  # training is over: leave the model ready to sample or evaluate
    return history


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    loader: Iterable,
    device: str | torch.device | None = None,
    max_batches: int | None = None,
) -> float:
    """Mean loss of `model` over `loader` (at most `max_batches` batches), in eval mode, without gradients."""
    if max_batches is not None:
        _positive_int("max_batches", max_batches)
    device = _model_device(model) if device is None else torch.device(device)
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        for i, batch in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            x, targets = _to_device(batch, device)
            _, loss = model(x, targets)  # loss is a mean over the batch
            # Weight by batch size so that a smaller last batch does not count as much as a full one.
            total += loss.item() * len(x)
            count += len(x)
    finally:
        model.train(was_training)  # give the model back in the mode we found it in
    if count == 0:
        raise ValueError("The evaluation loader yielded no batches; check the dataset and batch_size.")
    return total / count


def warmup_cosine(step: int, *, warmup_steps: int, total_steps: int, min_ratio: float = 0.0) -> float:
    """The learning-rate multiplier at `step`: a linear warm-up to 1, then a cosine decay to `min_ratio`."""
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"step must be an integer >= 0; got {step!r}.")
    if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
        raise ValueError(f"warmup_steps must be an integer >= 0; got {warmup_steps!r}.")
    if not isinstance(total_steps, int) or total_steps <= warmup_steps:
        raise ValueError(f"total_steps must be an integer > warmup_steps={warmup_steps}; got {total_steps!r}.")
    if not 0.0 <= min_ratio <= 1.0:
        raise ValueError(f"min_ratio must be between 0 and 1; got {min_ratio!r}.")
    if step < warmup_steps:
        # Warm-up, as in nanoGPT: (step + 1) / (warmup_steps + 1) rises from ~0 and reaches 1 at warmup_steps.
        # Starting small keeps the first updates (made with Adam's noisy early statistics) from blowing up.
        return (step + 1) / (warmup_steps + 1)
    # Decay: progress p = (step - warmup_steps) / (total_steps - warmup_steps) goes 0 -> 1, and
    #   multiplier = min_ratio + (1 - min_ratio) * (1 + cos(pi * p)) / 2   goes 1 -> min_ratio.
    # Past total_steps the multiplier stays at min_ratio.
    progress = min(1.0, (step - warmup_steps) / (total_steps - warmup_steps))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_cosine_schedule(
    optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int, min_ratio: float = 0.0
) -> torch.optim.lr_scheduler.LambdaLR:
    """A scheduler with lr = base_lr * warmup_cosine(step); call `.step()` after each optimizer step."""
    kwargs = dict(warmup_steps=warmup_steps, total_steps=total_steps, min_ratio=min_ratio)
    warmup_cosine(0, **kwargs)  # fail here, with a clear message, rather than inside the scheduler
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: warmup_cosine(step, **kwargs))
