"""Reinforcement-learning pieces shared by module 05: discounted returns, GAE, whitening and the PPO losses.

Introduced in 05_frontier/01_reinforcement_learning_and_ppo.ipynb (CartPole); 05.02 calls the same functions
on a language model, where one response is one episode and one token is one step.

Conventions (fixed across module 05):
- time is the LAST dimension: tensors are (..., T), e.g. (n_envs, T) for CartPole or (batch, T) for tokens;
- `dones[..., t] = 1` when the episode ENDED after the action at step t (terminated or truncated, as
  CleanRL's ppo.py treats both); the value after a done is not bootstrapped;
- `next_value` is V(s_T), the value of the state after the last stored step (ignored where `dones[..., -1] = 1`);
- `mask[..., t] = 1` marks a real step, 0 a padded one: a batch of variable-length episodes (responses that stop
  at an end token) is right-padded to one length T. Every real step followed by padding must end its episode
  (`dones_from_mask` builds such dones); padded steps get zero advantage and return and count in no mean.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:  # torch is imported inside the functions (nothing heavy at import time)
    import torch


def _check_same_shape(**tensors: "torch.Tensor") -> None:
    """ValueError unless every tensor has the shape of the first one."""
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"tensors must have the same shape (..., T); got {shapes}")


def _real(mask: "torch.Tensor | None", like: "torch.Tensor", name: str = "mask") -> "torch.Tensor | None":
    """The mask as booleans (True = a real step), after checking that it has the shape of `like`."""
    if mask is None:
        return None
    if tuple(mask.shape) != tuple(like.shape):
        raise ValueError(f"{name} must have the shape {tuple(like.shape)} of the data; got {tuple(mask.shape)}")
    return mask.bool()


def _check_unit_interval(name: str, value: float) -> None:
    """ValueError unless 0 <= value <= 1."""
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1]; got {value}")


def discounted_returns(rewards: "torch.Tensor", dones: "torch.Tensor", gamma: float,
                       next_value: "torch.Tensor | None" = None) -> "torch.Tensor":
    """G_t = r_t + gamma (1 - done_t) G_{t+1}, computed backwards over the last dimension; shape of rewards."""
    import torch

    _check_same_shape(rewards=rewards, dones=dones)
    _check_unit_interval("gamma", gamma)
    not_done = 1.0 - dones.to(rewards.dtype)
    running = torch.zeros_like(rewards[..., 0]) if next_value is None else next_value.to(rewards.dtype)
    returns = torch.empty_like(rewards)
    for t in reversed(range(rewards.shape[-1])):
        running = rewards[..., t] + gamma * not_done[..., t] * running
        returns[..., t] = running
    return returns


def dones_from_mask(mask: "torch.Tensor") -> "torch.Tensor":
    """Dones (..., T) for right-padded episodes: 1 at each row's last real step (before padding, or at T - 1)."""
    import torch

    real = mask.bool()
    # a real step is the last one when the next step is padding, or when it is the last stored step
    next_real = torch.cat([real[..., 1:], torch.zeros_like(real[..., :1])], dim=-1)
    return (real & ~next_real).to(mask.dtype if mask.is_floating_point() else torch.get_default_dtype())


def gae(rewards: "torch.Tensor", values: "torch.Tensor", dones: "torch.Tensor", next_value: "torch.Tensor",
        gamma: float, lam: float, *, mask: "torch.Tensor | None" = None) -> tuple["torch.Tensor", "torch.Tensor"]:
    """Generalised advantage estimation: (advantages, returns = advantages + values), both shaped (..., T).

    delta_t = r_t + gamma (1 - done_t) V(s_{t+1}) - V(s_t);  A_t = delta_t + gamma lam (1 - done_t) A_{t+1}
    (Schulman et al. 2016, eq. 16, with episode ends). lam = 0 gives the TD error, lam = 1 the Monte-Carlo
    return minus V(s_t). `next_value` (...,) is V(s_T), the state after the last step. With a `mask` (1 = real
    step) padded steps count as zero reward and zero value, so they get advantage and return 0 and, because the
    real step before them must be done, nothing of them reaches a real step.
    """
    import torch

    _check_same_shape(rewards=rewards, values=values, dones=dones)
    _check_unit_interval("gamma", gamma)
    _check_unit_interval("lam", lam)
    if tuple(next_value.shape) != tuple(rewards.shape[:-1]):
        raise ValueError(f"next_value must have shape {tuple(rewards.shape[:-1])}; got {tuple(next_value.shape)}")
    real = _real(mask, rewards)
    if real is not None:
        ends_early = real[..., :-1] & ~real[..., 1:] & (dones[..., :-1] == 0)
        if ends_early.any():
            raise ValueError("a real step followed by padding must end its episode (dones = 1 there, see "
                             f"dones_from_mask); {int(ends_early.sum())} such steps have dones = 0")
        # padding may hold anything (pad-token log-probs, values of the pad state): zero it, NaN included
        rewards, values = torch.where(real, rewards, 0.0), torch.where(real, values, 0.0)
    not_done = 1.0 - dones.to(rewards.dtype)
    # V(s_{t+1}) for every t: the stored values shifted left by one, then V(s_T)
    next_values = torch.cat([values[..., 1:], next_value.unsqueeze(-1).to(values.dtype)], dim=-1)
    deltas = rewards + gamma * not_done * next_values - values          # (..., T) TD errors
    advantages = torch.empty_like(rewards)
    running = torch.zeros_like(rewards[..., 0])
    for t in reversed(range(rewards.shape[-1])):
        running = deltas[..., t] + gamma * lam * not_done[..., t] * running
        advantages[..., t] = running
    if real is not None:  # a padded last step may still bootstrap from next_value: its advantage is dropped too
        advantages = torch.where(real, advantages, 0.0)
    return advantages, advantages + values


def whiten(x: "torch.Tensor", mask: "torch.Tensor | None" = None, eps: float = 1e-8) -> "torch.Tensor":
    """(x - mean) / (std + eps) as CleanRL normalises advantages; with a mask, over the real elements only.

    The mean and the (unbiased) standard deviation come from the real elements, and padded elements are set to 0,
    so padding neither shifts nor scales the real ones: whiten(x, mask)[mask] == whiten(x[mask]).
    """
    import torch

    real = _real(mask, x)
    values = x.flatten() if real is None else x[real]
    if values.numel() < 2:
        raise ValueError(f"whiten needs at least 2 real elements for a standard deviation; got {values.numel()}")
    out = (x - values.mean()) / (values.std() + eps)
    return out if real is None else torch.where(real, out, 0.0)


class PPOLosses(NamedTuple):
    """The pieces of one PPO minibatch loss; `loss` is what is minimised, the rest are for logging."""

    loss: "torch.Tensor"           # policy + vf_coef * value - ent_coef * entropy
    policy: "torch.Tensor"         # clipped surrogate, negated (to minimise)
    value: "torch.Tensor"          # 0.5 * squared error (clipped or not)
    entropy: "torch.Tensor"        # mean entropy of the policy
    approx_kl: "torch.Tensor"      # mean of (ratio - 1) - log ratio, an estimate of KL(old || new)
    clip_fraction: "torch.Tensor"  # share of samples whose ratio left [1 - clip, 1 + clip]


def _mean(x: "torch.Tensor", real: "torch.Tensor | None") -> "torch.Tensor":
    """Mean of x, over the elements where `real` is True if it is given (e.g. the response tokens)."""
    import torch

    if real is None:
        return x.mean()
    # torch.where, not x * mask: a padded element that is inf or NaN must not turn the sum into NaN
    return torch.where(real, x, 0.0).sum() / real.sum().clamp(min=1).to(x.dtype)


def ppo_losses(new_logprobs: "torch.Tensor", old_logprobs: "torch.Tensor", advantages: "torch.Tensor",
               new_values: "torch.Tensor", old_values: "torch.Tensor", returns: "torch.Tensor",
               entropy: "torch.Tensor", *, clip_coef: float = 0.2, vf_coef: float = 0.5, ent_coef: float = 0.01,
               clip_vloss: bool = True, mask: "torch.Tensor | None" = None) -> PPOLosses:
    """PPO's clipped objective, value loss and entropy bonus on one minibatch, as in CleanRL's ppo.py.

    ratio = exp(new_logprobs - old_logprobs); policy = -mean(min(ratio A, clip(ratio, 1-eps, 1+eps) A)).
    All inputs share one shape (samples or (batch, T) tokens); `mask` (same shape, 1 = counts) restricts every
    mean to the real tokens. Advantages are used as given: normalise them before the call if you want to.
    """
    import torch

    _check_same_shape(new_logprobs=new_logprobs, old_logprobs=old_logprobs, advantages=advantages,
                      new_values=new_values, old_values=old_values, returns=returns, entropy=entropy)
    if clip_coef <= 0:
        raise ValueError(f"clip_coef must be > 0; got {clip_coef}")
    mask = _real(mask, new_logprobs)
    log_ratio = new_logprobs - old_logprobs
    ratio = log_ratio.exp()
    surrogate = torch.min(ratio * advantages, ratio.clamp(1 - clip_coef, 1 + clip_coef) * advantages)
    policy = -_mean(surrogate, mask)
    value_error = (new_values - returns) ** 2
    if clip_vloss:  # the new value may move at most clip_coef from the old one, or pay the larger error
        clipped_values = old_values + (new_values - old_values).clamp(-clip_coef, clip_coef)
        value_error = torch.max(value_error, (clipped_values - returns) ** 2)
    value = 0.5 * _mean(value_error, mask)
    mean_entropy = _mean(entropy, mask)
    with torch.no_grad():
        approx_kl = _mean((ratio - 1) - log_ratio, mask)
        clip_fraction = _mean(((ratio - 1).abs() > clip_coef).to(ratio.dtype), mask)
    loss = policy + vf_coef * value - ent_coef * mean_entropy
    return PPOLosses(loss, policy, value, mean_entropy, approx_kl, clip_fraction)
