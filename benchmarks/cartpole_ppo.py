"""PPO on gymnasium's CartPole-v1 with CleanRL's hyperparameters: steps and time to an average return of 475.

    OMP_NUM_THREADS=1 python benchmarks/cartpole_ppo.py                     # 3 seeds x 500,000 steps (CleanRL's)
    python benchmarks/cartpole_ppo.py --seeds 1 2 3 4 5 --steps 500000
    python benchmarks/cartpole_ppo.py --steps 2048 --seeds 1                # a quick run

It runs the training code of 05_frontier/01_reinforcement_learning_and_ppo.ipynb (its `train_ppo`, imported with
`utils.notebooks.notebook_definitions`, so the figures are the notebook's), one thread, and prints one JSON line
per seed: the first step and wall time at which the mean return of the last 20 episodes reached 475 (CleanRL's
"solved"; null if never), the final average and env steps/s including learning.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

NOTEBOOK = Path(__file__).resolve().parents[1] / "05_frontier" / "01_reinforcement_learning_and_ppo.ipynb"
CLEANRL = dict(n_envs=4, n_steps=128, n_minibatches=4, n_epochs=4, lr=2.5e-4, gamma=0.99, lam=0.95, clip_coef=0.2,
               ent_coef=0.01, vf_coef=0.5, max_grad_norm=0.5, solve_window=20)


def main(argv: list[str] | None = None) -> list[dict]:
    """Train one PPO run per seed; print and return one result dict per seed."""
    import torch

    from utils.notebooks import notebook_definitions

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=500_000, help="env steps per seed (CleanRL: 500,000)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    args = parser.parse_args(argv)
    if args.steps < CLEANRL["n_envs"] * CLEANRL["n_steps"]:
        raise SystemExit(f"--steps must be at least one rollout ({CLEANRL['n_envs'] * CLEANRL['n_steps']}); got {args.steps}")
    torch.set_num_threads(1)
    ns = notebook_definitions(NOTEBOOK)
    cfg = ns["Config"](0.9, 0, 0, args.steps, tuple(args.seeds), False, **CLEANRL, grad_episodes=0, n_trials=0)
    results = []
    for seed in args.seeds:
        h = ns["train_ppo"](seed, cfg)
        result = {"seed": seed, "steps": args.steps, "seconds": round(h["time"], 1),
                  "steps_per_second": round(args.steps / h["time"]), "solve_step": h["solve_step"],
                  "solve_seconds": None if h["solve_time"] is None else round(h["solve_time"], 1),
                  "final_average": round(h["final_average"], 1), "episodes": len(h["returns"])}
        print(json.dumps(result), flush=True)
        results.append(result)
    return results


if __name__ == "__main__":
    main()
