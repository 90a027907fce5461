"""Train `utils.models.gpt` on characters for a budget; print the validation loss and tokens/s.

    python benchmarks/char_gpt.py --recipe cpu --seconds 300         # the issue's laptop-CPU budget
    python benchmarks/char_gpt.py --recipe gpu --steps 5000          # nanoGPT's shakespeare_char recipe
    python benchmarks/char_gpt.py --text my.txt --steps 200 --n-layer 2

The text defaults to tiny Shakespeare through `utils.data.load` (it needs the network once; with
COURSE_OFFLINE=1 you get the announced Python-docs stand-in, whose losses are not comparable). The split is
nanoGPT's (first 90 % train, last 10 % validation), and so are the two recipes, so the figures can be put
side by side with nanoGPT's under the same budget: it reports 1.47 validation loss in ~3 min on an A100
with the gpu recipe, and 1.88 in ~3 min with its CPU recipe. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

from utils.models.gpt import GPT, GPTConfig
from utils.runtime import get_device, seed_everything
from utils.train import warmup_cosine

RECIPES = {  # nanoGPT's config/train_shakespeare_char.py, and its suggested CPU version of it
    "cpu": dict(n_layer=4, n_head=4, n_embd=128, block_size=64, batch_size=12, dropout=0.0, lr=1e-3,
                steps=2000, warmup=100, eval_batches=20),
    "gpu": dict(n_layer=6, n_head=6, n_embd=384, block_size=256, batch_size=64, dropout=0.2, lr=1e-3,
                steps=5000, warmup=100, eval_batches=200),
}


def read_text(path: str | None) -> tuple[str, str]:
    """(text, where it came from): a UTF-8 file, or tiny Shakespeare (or its stand-in) from utils.data."""
    if path is not None:
        file = Path(path)
        if not file.is_file():
            raise SystemExit(f"--text {path}: no such file. Give a UTF-8 text file, or leave --text out for "
                             "tiny Shakespeare.")
        return file.read_text(encoding="utf-8"), str(file)
    from utils.data import load
    from utils.runtime import use_standins

    return load("tiny_shakespeare"), "python docs stand-in" if use_standins() else "tiny_shakespeare"


def batches(data: torch.Tensor, block_size: int, batch_size: int, generator: torch.Generator
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """A random batch of windows: x (B, T) and the same shifted by one, y (B, T)."""
    starts = torch.randint(len(data) - block_size - 1, (batch_size,), generator=generator)
    x = torch.stack([data[s: s + block_size] for s in starts.tolist()])
    y = torch.stack([data[s + 1: s + 1 + block_size] for s in starts.tolist()])
    return x, y


@torch.no_grad()
def estimate_loss(model: GPT, data: torch.Tensor, args: argparse.Namespace, device: torch.device) -> float:
    """Mean loss over `eval_batches` random batches, drawn with a fixed seed so every call sees the same ones."""
    model.eval()
    generator = torch.Generator().manual_seed(1234)
    losses = []
    for _ in range(args.eval_batches):
        x, y = batches(data, args.block_size, args.batch_size, generator)
        losses.append(model(x.to(device), y.to(device))[1].item())
    model.train()
    return sum(losses) / len(losses)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", choices=RECIPES, default="cpu", help="defaults for the options below")
    parser.add_argument("--text", default=None, help="a UTF-8 text file (default: tiny Shakespeare)")
    parser.add_argument("--seconds", type=float, default=None,
                        help="stop after this wall time even if --steps are not done (the cosine schedule is "
                             "laid out over --steps, so set --steps to what fits)")
    parser.add_argument("--device", default=None, help="cpu, cuda, mps (default: the best available)")
    parser.add_argument("--seed", type=int, default=1337)
    for name, value in RECIPES["cpu"].items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=None)
    args = parser.parse_args(argv)
    for name, value in RECIPES[args.recipe].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.seconds is not None and args.seconds <= 0:
        parser.error(f"--seconds must be positive, got {args.seconds}")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    seed_everything(args.seed)
    device = torch.device(args.device) if args.device else get_device()
    text, source = read_text(args.text)
    chars = sorted(set(text))
    stoi = {c: i for i, c in enumerate(chars)}
    data = torch.tensor([stoi[c] for c in text], dtype=torch.long)
    n = int(0.9 * len(data))
    train, val = data[:n], data[n:]
    if len(val) <= args.block_size + 1:
        raise SystemExit(f"the text is too short: its last 10 % ({len(val)} characters) must be longer than "
                         f"--block-size {args.block_size}")

    config = GPTConfig(vocab_size=len(chars), block_size=args.block_size, n_layer=args.n_layer,
                       n_head=args.n_head, n_embd=args.n_embd, dropout=args.dropout)
    model = GPT(config).to(device)
    optimizer = model.optimizer(lr=args.lr, weight_decay=0.1, betas=(0.9, 0.99))
    generator = torch.Generator().manual_seed(args.seed)
    print(f"{source}: {len(text):,} characters, vocabulary {len(chars)}; GPT {model.num_params():,} "
          f"parameters on {device}; recipe {args.recipe}", file=sys.stderr)

    warmup = min(args.warmup, args.steps // 10)  # a short run keeps a tenth of its steps for warm-up
    step, start = 0, time.perf_counter()
    while step < args.steps and (args.seconds is None or time.perf_counter() - start < args.seconds):
        scale = warmup_cosine(step, warmup_steps=warmup, total_steps=args.steps, min_ratio=0.1)
        for group in optimizer.param_groups:
            group["lr"] = args.lr * scale
        x, y = batches(train, args.block_size, args.batch_size, generator)
        loss = model(x.to(device), y.to(device))[1]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        step += 1
        if step % max(1, args.steps // 10) == 0:
            print(f"step {step:>6}: train loss {loss.item():.4f}", file=sys.stderr)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start

    result = {"source": source, "recipe": args.recipe, "device": str(device), "steps": step,
              "seconds": round(seconds, 1), "tokens_per_second": round(step * args.batch_size * args.block_size
                                                                         / seconds),
              "val_loss": round(estimate_loss(model, val, args, device), 4), "params": model.num_params(),
              "config": asdict(config)}
    if not math.isfinite(result["val_loss"]):
        raise SystemExit(f"training diverged: validation loss {result['val_loss']}")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
