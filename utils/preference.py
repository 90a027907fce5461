"""Preference tuning from scratch: sequence log-probabilities, the DPO loss and its reward metrics, GRPO advantages.

Introduced in 05_frontier/03_direct_preference_optimization.ipynb; reused by the capstone 05.04 (which
preference-tunes the course GPT). Everything works on plain tensors, so it serves a Hugging Face model, the course
GPT (`forward(x) -> (logits, loss)`) or log-probabilities that were computed earlier.

Conventions (those of trl 1.16, which tests/reference/test_05_03_dpo.py checks them against):
- `completion_mask[b, t] = 1` where token t of row b belongs to the answer (it is scored), 0 on the prompt and
  on padding. The logits at position t predict token t + 1, hence the shift by one.
- DPO's implicit reward of an answer y is `beta * (log pi(y|x) - log pi_ref(y|x))`, summed over its tokens.
"""

from __future__ import annotations

from typing import Any

GRPO_SCALES = ("group", "batch", "none")


def sequence_logprobs(logits: Any, input_ids: Any, completion_mask: Any) -> Any:
    """Sum of log p(token) over the completion tokens of each row: (B, T, V), (B, T), (B, T) -> (B,)."""
    import torch

    if logits.dim() != 3 or input_ids.shape != logits.shape[:2] or completion_mask.shape != input_ids.shape:
        raise ValueError(f"expected logits (B, T, V), input_ids and completion_mask (B, T); got "
                         f"{tuple(logits.shape)}, {tuple(input_ids.shape)}, {tuple(completion_mask.shape)}")
    # position t predicts token t + 1: drop the last logit and the first token
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)                      # (B, T-1, V)
    token_logp = logp.gather(-1, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)      # (B, T-1)
    mask = completion_mask[:, 1:].to(token_logp.dtype)                            # (B, T-1)
    return (token_logp * mask).sum(dim=1)                                         # (B,)


def dpo_loss(policy_chosen: Any, policy_rejected: Any, ref_chosen: Any, ref_rejected: Any,
             beta: float = 0.1) -> tuple[Any, Any, Any]:
    """DPO's sigmoid loss on sequence log-probs (each (B,)) -> (mean loss, chosen rewards (B,), rejected rewards (B,)).

    loss = -log sigmoid(beta * [(log pi(y_w) - log pi_ref(y_w)) - (log pi(y_l) - log pi_ref(y_l))])
    """
    import torch.nn.functional as F

    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    shapes = {tuple(t.shape) for t in (policy_chosen, policy_rejected, ref_chosen, ref_rejected)}
    if len(shapes) != 1 or len(next(iter(shapes))) != 1:
        raise ValueError(f"expected four log-prob tensors of the same shape (B,), got shapes {sorted(shapes)}")
    chosen_logratios = policy_chosen - ref_chosen          # (B,) log pi/pi_ref of the preferred answer
    rejected_logratios = policy_rejected - ref_rejected    # (B,) ... of the dispreferred answer
    losses = -F.logsigmoid(beta * (chosen_logratios - rejected_logratios))
    # the implicit rewards are metrics only: no gradient flows through them
    return losses.mean(), beta * chosen_logratios.detach(), beta * rejected_logratios.detach()


def reward_metrics(chosen_rewards: Any, rejected_rewards: Any) -> dict[str, float]:
    """trl's DPO metrics from the implicit rewards (B,): rewards/chosen, /rejected, /accuracies, /margins."""
    if chosen_rewards.shape != rejected_rewards.shape:
        raise ValueError(f"chosen and rejected rewards must have the same shape, got "
                         f"{tuple(chosen_rewards.shape)} and {tuple(rejected_rewards.shape)}")
    return {
        "rewards/chosen": chosen_rewards.mean().item(),
        "rewards/rejected": rejected_rewards.mean().item(),
        # a tie counts as wrong, as in trl (strict >)
        "rewards/accuracies": (chosen_rewards > rejected_rewards).float().mean().item(),
        "rewards/margins": (chosen_rewards - rejected_rewards).mean().item(),
    }


def grpo_advantages(rewards: Any, num_generations: int, scale: str = "group", eps: float = 1e-4) -> Any:
    """GRPO's group-relative advantages: (reward - mean of its group) / (std + eps); (N,) -> (N,).

    `rewards` holds `num_generations` consecutive completions per prompt. `scale`: "group" divides by the
    group's std (the GRPO paper), "batch" by the std of the whole batch, "none" does not divide (Dr. GRPO).
    The std is the unbiased one (n - 1), as torch.std and trl.
    """
    if scale not in GRPO_SCALES:
        raise ValueError(f"scale must be one of {GRPO_SCALES}, got {scale!r}")
    if rewards.dim() != 1 or num_generations < 2 or rewards.numel() % num_generations:
        raise ValueError(f"rewards must be (N,) with N a multiple of num_generations >= 2; got shape "
                         f"{tuple(rewards.shape)} and num_generations={num_generations}")
    groups = rewards.view(-1, num_generations)                          # (prompts, G)
    mean = groups.mean(dim=1).repeat_interleave(num_generations)        # (N,)
    advantages = rewards - mean
    if scale == "none":
        return advantages
    std = groups.std(dim=1).repeat_interleave(num_generations) if scale == "group" else rewards.std().expand_as(rewards)
    return advantages / (std + eps)
