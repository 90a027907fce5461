"""GRPO with and without a KL term, at a scale two CPU cores afford: does the KL run collapse?

    OMP_NUM_THREADS=1 python benchmarks/grpo_kl.py                          # betas 0, 0.04, 0.4 x seeds 0 1 2
    python benchmarks/grpo_kl.py --betas 0 0.04 --seeds 0 --steps 50        # a quick run
    python benchmarks/grpo_kl.py --lr 1e-3                                  # a more aggressive learning rate

A public report (Qwen3-0.6B on MATH-500) saw GRPO *with* a KL term to the reference collapse to 0.4 % at step 100
while the same run without it went from 15.2 % to 47.4 %. This script tries the same comparison on a task whose
reward a program checks exactly: two-digit addition ("23+41=" -> "64;", "03+04=" -> "07;"), a 2-block causal transformer over 13
characters. Stage 1: SFT on part of the problems until greedy accuracy on held-out problems passes --base-acc (the
"base model", also the reference). Stage 2: GRPO from that base, one run per (beta, seed): per step, --prompts
prompts x --group sampled completions (temperature 1), reward 1 for the exact sum, advantages by
`utils.preference.grpo_advantages` (the group's std), loss as in trl 1.16 with one update per batch (ratio = 1):
per token -A * log pi + beta * k3, k3 = exp(ref - logp) - (ref - logp) - 1, averaged over each completion's
tokens, then over the batch. It prints one JSON line per run: every --eval-every steps (step, held-out greedy
accuracy, mean sampled training reward since the last point), the final sampled KL to the reference (nats per
completion, last batch) and the wall time.
"""

from __future__ import annotations

import argparse
import json
import time

CHARS = "0123456789+=;"  # ";" ends an answer
EOS = CHARS.index(";")


def encode(text: str) -> list[int]:
    """Characters -> token ids."""
    return [CHARS.index(c) for c in text]


def make_problems(seed: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """All a + b with a, b in 0..49, shuffled and split: 1,500 for training, 500 held out."""
    import random

    problems = [(a, b) for a in range(50) for b in range(50)]
    random.Random(seed).shuffle(problems)
    return problems[:1500], problems[1500:2000]


def tiny_lm(seed: int):
    """A 2-block causal transformer language model over CHARS (about 100k parameters)."""
    import torch
    from torch import nn

    class TinyLM(nn.Module):
        def __init__(self, d: int = 64, n_layer: int = 2, block: int = 16) -> None:
            super().__init__()
            self.tok, self.pos = nn.Embedding(len(CHARS), d), nn.Embedding(block, d)
            layer = nn.TransformerEncoderLayer(d, 4, 4 * d, dropout=0.0, batch_first=True, norm_first=True)
            self.blocks = nn.TransformerEncoder(layer, n_layer, enable_nested_tensor=False)
            self.head = nn.Linear(d, len(CHARS))

        def forward(self, idx: torch.Tensor) -> torch.Tensor:   # (B, T) -> logits (B, T, V)
            T = idx.shape[1]
            causal = nn.Transformer.generate_square_subsequent_mask(T)
            x = self.tok(idx) + self.pos(torch.arange(T))
            return self.head(self.blocks(x, mask=causal, is_causal=True))

    torch.manual_seed(seed)
    return TinyLM()


def prompt_ids(problems: list[tuple[int, int]]):
    """(B, 6) left-aligned prompts "aa+bb=" (numbers zero-padded to two digits so every prompt has 6 tokens)."""
    import torch

    return torch.tensor([encode(f"{a:02d}+{b:02d}=") for a, b in problems])


def sample(model, prompts, max_new: int = 4, temperature: float = 1.0):
    """Completions (B, max_new) and their mask (1 up to and including the first ";"); greedy if temperature 0."""
    import torch

    idx = prompts
    with torch.no_grad():
        for _ in range(max_new):
            logits = model(idx)[:, -1]
            nxt = logits.argmax(-1) if temperature == 0 else torch.multinomial((logits / temperature).softmax(-1), 1)[:, 0]
            idx = torch.cat([idx, nxt[:, None]], dim=1)
    completion = idx[:, prompts.shape[1]:]
    return completion, completion_mask(completion)


def completion_mask(completion):
    """(B, L) -> (B, L) float mask: 1 on the tokens before and including the first ";", 0 after it."""
    is_end = (completion == EOS).long()
    return ((is_end.cumsum(1) - is_end) == 0).float()   # ends seen strictly before this token: none


def rewards_of(problems, completion, mask):
    """1.0 if the completion is exactly the sum (two digits) followed by ";", else 0.0: (B,)."""
    import torch

    texts = ["".join(CHARS[t] for t, m in zip(row.tolist(), ms.tolist()) if m) for row, ms in zip(completion, mask)]
    return torch.tensor([float(t == f"{a + b:02d};") for t, (a, b) in zip(texts, problems)])


def token_logps(model, prompts, completion):
    """log pi(token) of each completion token: (B, L)."""
    import torch

    idx = torch.cat([prompts, completion], dim=1)
    logits = model(idx)[:, prompts.shape[1] - 1:-1]                     # position t predicts token t + 1
    return torch.log_softmax(logits.float(), -1).gather(-1, completion[..., None])[..., 0]


def accuracy(model, problems) -> float:
    """Greedy exact-match accuracy on `problems`."""
    model.eval()
    completion, mask = sample(model, prompt_ids(problems), temperature=0)
    return rewards_of(problems, completion, mask).mean().item()


def sft_base(train, held_out, base_acc: float, seed: int, lr: float = 3e-3):
    """SFT on the training problems until held-out greedy accuracy >= base_acc: the base (and reference) model."""
    import random

    import torch

    model = tiny_lm(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    rng = random.Random(seed)
    for step in range(1, 20_001):
        batch = rng.sample(train, 64)
        idx = torch.tensor([encode(f"{a:02d}+{b:02d}={a + b:02d};") for a, b in batch])  # (64, 9)
        model.train()
        logits = model(idx[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits[:, 5:].reshape(-1, len(CHARS)), idx[:, 6:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 25 == 0 and (acc := accuracy(model, held_out)) >= base_acc:
            return model, acc, step
    raise RuntimeError(f"SFT never reached {base_acc:.0%} held-out accuracy")


def grpo(base, train, held_out, beta: float, seed: int, args) -> dict:
    """One GRPO run from `base` (also the reference); held-out accuracy every args.eval_every steps."""
    import copy
    import random

    import torch

    from utils.preference import grpo_advantages

    policy, ref = copy.deepcopy(base), copy.deepcopy(base).eval()
    opt = torch.optim.AdamW(policy.parameters(), lr=args.lr, weight_decay=0.0)
    rng = random.Random(seed)
    torch.manual_seed(seed)
    curve, start, window = [(0, round(accuracy(policy, held_out), 3), None)], time.perf_counter(), []
    for step in range(1, args.steps + 1):
        problems = [p for p in rng.sample(train, args.prompts) for _ in range(args.group)]  # G copies per prompt
        prompts = prompt_ids(problems)
        policy.eval()
        completion, mask = sample(policy, prompts)
        rewards = rewards_of(problems, completion, mask)                                     # (B,) 0 or 1
        window.append(rewards.mean().item())
        advantages = grpo_advantages(rewards, args.group)                                    # (B,)
        policy.train()
        logp = token_logps(policy, prompts, completion)                                      # (B, L)
        with torch.no_grad():
            ref_logp = token_logps(ref, prompts, completion)
        k3 = torch.exp(ref_logp - logp) - (ref_logp - logp) - 1                              # >= 0 per token
        per_token = -advantages[:, None] * logp + beta * k3
        loss = ((per_token * mask).sum(1) / mask.sum(1)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % args.eval_every == 0:
            curve.append((step, round(accuracy(policy, held_out), 3), round(sum(window) / len(window), 3)))
            window = []
    kl = ((logp - ref_logp).detach() * mask).sum(1).mean().item()   # sampled KL(pi || ref) of the last batch
    return {"beta": beta, "seed": seed, "curve": curve, "final_kl": round(kl, 3),
            "seconds": round(time.perf_counter() - start, 1)}


def main(argv: list[str] | None = None) -> list[dict]:
    """Train the base once per seed, then one GRPO run per beta; print one JSON line per run."""
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--betas", type=float, nargs="+", default=[0.0, 0.04, 0.4])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=200, help="GRPO steps per run")
    parser.add_argument("--prompts", type=int, default=16, help="prompts per step")
    parser.add_argument("--group", type=int, default=8, help="completions per prompt (G)")
    parser.add_argument("--lr", type=float, default=3e-4, help="AdamW learning rate of the GRPO runs")
    parser.add_argument("--base-acc", type=float, default=0.15, help="held-out accuracy at which SFT stops")
    parser.add_argument("--eval-every", type=int, default=25)
    args = parser.parse_args(argv)
    if args.group < 2 or args.steps < 1:
        raise SystemExit(f"--group must be >= 2 and --steps >= 1; got {args.group} and {args.steps}")
    torch.set_num_threads(1)
    results = []
    for seed in args.seeds:
        train, held_out = make_problems(seed)
        base, base_acc, sft_steps = sft_base(train, held_out, args.base_acc, seed)
        for beta in args.betas:
            result = {**grpo(base, train, held_out, beta, seed, args), "lr": args.lr, "base_acc": round(base_acc, 3),
                      "sft_steps": sft_steps}
            print(json.dumps(result), flush=True)
            results.append(result)
    return results


if __name__ == "__main__":
    main()
