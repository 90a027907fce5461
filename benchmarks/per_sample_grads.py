"""05.09's DP-SGD cost: one clipped, noised gradient three ways, on the notebook's MLP and a wider one.

    OMP_NUM_THREADS=1 python benchmarks/per_sample_grads.py                 # batches 64 and 256, both widths
    python benchmarks/per_sample_grads.py --batches 32 --widths 32 --repeats 3

Methods: `loop` (one backward pass per example: the textbook definition), `vmap` (utils.privacy: torch.func
grad vectorised over the batch), `opacus` (GradSampleModule's hooks + DPOptimizer.pre_step), and `sgd` (a plain
batch gradient, no privacy) as the baseline. Every method's result is compared with `vmap`'s before any timing, so a
fast but wrong method fails instead of winning. One JSON line per row, then a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from utils.privacy import clip_and_noise, per_sample_grads

METHODS = ("sgd", "loop", "vmap", "opacus")
C, SIGMA, D_IN, N_CLASSES = 1.0, 1.0, 196, 10


def mlp(width: int) -> nn.Module:
    """The notebook's MLP (196 -> width -> 10), seeded."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(D_IN, width), nn.ReLU(), nn.Linear(width, N_CLASSES))


def loop_grads(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-sample gradients by definition: one forward and backward pass per example."""
    rows = []
    for xi, yi in zip(x, y):
        model.zero_grad()
        F.cross_entropy(model(xi[None]), yi[None]).backward()
        rows.append({n: p.grad.clone() for n, p in model.named_parameters()})
    return {n: torch.stack([r[n] for r in rows]) for n in rows[0]}


def step_fn(method: str, width: int, x: torch.Tensor, y: torch.Tensor) -> Callable[[], list[torch.Tensor]]:
    """A function that computes one step's gradient with `method` (noise from a fresh generator, seed 0)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}; got {method!r}.")
    model, B = mlp(width), len(x)
    if method == "sgd":
        def run():
            model.zero_grad()
            F.cross_entropy(model(x), y).backward()
            return [p.grad for p in model.parameters()]
    elif method in ("loop", "vmap"):
        grads = loop_grads if method == "loop" else per_sample_grads
        def run():
            g = grads(model, x, y)
            return list(clip_and_noise(g, C, SIGMA, B, torch.Generator().manual_seed(0)).values())
    else:
        from opacus import GradSampleModule
        from opacus.optimizers import DPOptimizer

        gsm = GradSampleModule(model)
        opt = DPOptimizer(torch.optim.SGD(gsm.parameters(), lr=1.0), noise_multiplier=SIGMA, max_grad_norm=C,
                          expected_batch_size=B)
        def run():
            opt.generator = torch.Generator().manual_seed(0)  # the same noise as the other methods, every step
            opt.zero_grad()
            F.cross_entropy(gsm(x), y).backward()
            opt.pre_step()
            return [p.grad for p in gsm.parameters()]
    return run


def measure(method: str, width: int, batch: int, repeats: int) -> dict:
    """One row: check the method against vmap, then the median seconds per step over `repeats` (after a warm-up)."""
    gen = torch.Generator().manual_seed(batch)
    x, y = torch.randn(batch, D_IN, generator=gen), torch.randint(0, N_CLASSES, (batch,), generator=gen)
    run = step_fn(method, width, x, y)
    got = [g.detach().clone() for g in run()]  # also the warm-up
    if method != "sgd":
        for g, ref in zip(got, step_fn("vmap", width, x, y)()):
            torch.testing.assert_close(g, ref, rtol=1e-4, atol=1e-6)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - start)
    median = sorted(seconds)[len(seconds) // 2]
    row = dict(method=method, width=width, batch=batch, ms_per_step=round(1000 * median, 2),
               threads=torch.get_num_threads())
    print(json.dumps(row), flush=True)
    return row


def markdown(rows: list[dict]) -> str:
    """The rows as a Markdown table, each time also as a multiple of the plain batch gradient (`sgd`) of its size."""
    base = {(r["width"], r["batch"]): r["ms_per_step"] for r in rows if r["method"] == "sgd"}
    lines = ["| width | batch | method | ms / step | × plain SGD |", "|---|---|---|---|---|"]
    for r in rows:
        ref = base.get((r["width"], r["batch"]))
        times = f"{r['ms_per_step'] / ref:.1f}" if ref else "—"
        lines.append(f"| {r['width']} | {r['batch']} | {r['method']} | {r['ms_per_step']:.2f} | {times} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    """Parse the command line and measure every (width, batch, method)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--widths", nargs="+", type=int, default=[32, 512], help="hidden units of the MLP")
    parser.add_argument("--batches", nargs="+", type=int, default=[64, 256])
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", message=".*Full backward hook is firing.*")  # opacus on input layers
    rows = [measure(m, w, b, args.repeats) for w in args.widths for b in args.batches for m in args.methods]
    print(markdown(rows))
    return rows


if __name__ == "__main__":
    main()
