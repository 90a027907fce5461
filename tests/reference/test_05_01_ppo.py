"""05.01's from-scratch RL pieces on random inputs: GAE (utils.rl and the notebook's) against the direct
definition A_t = sum_l (gamma lam)^l delta_{t+l} computed term by term, its lam = 0 / lam = 1 limits, discounted
returns against the recursion, PPO's losses against CleanRL ppo.py's inline formulas (policy, clipped value
loss, entropy, approx_kl, clip fraction), the clipped objective's gradient, the token mask 05.02 needs, the
notebook's value iteration against an exact linear solve, and the exercise solutions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from utils import rl
from utils.notebooks import notebook_definitions

NOTEBOOK = Path(__file__).resolve().parents[2] / "05_frontier" / "01_reinforcement_learning_and_ppo.ipynb"
ns = notebook_definitions(NOTEBOOK, solutions=True) if NOTEBOOK.exists() else {}


def random_rollout(seed: int, n: int, T: int, p_done: float = 0.1) -> tuple[torch.Tensor, ...]:
    """rewards, values, dones (n, T) and next_value (n,) float64, with episode ends at random steps."""
    gen = torch.Generator().manual_seed(seed)
    rewards = torch.randn(n, T, generator=gen, dtype=torch.float64)
    values = torch.randn(n, T, generator=gen, dtype=torch.float64)
    dones = (torch.rand(n, T, generator=gen, dtype=torch.float64) < p_done).to(torch.float64)
    next_value = torch.randn(n, generator=gen, dtype=torch.float64)
    return rewards, values, dones, next_value


def gae_by_definition(rewards, values, dones, next_value, gamma: float, lam: float) -> np.ndarray:
    """A_t = sum_{l>=0} (gamma lam)^l delta_{t+l}, the sum stopping after the step where the episode ends."""
    r, v, d, nv = (x.numpy() for x in (rewards, values, dones, next_value))
    n, T = r.shape
    out = np.zeros((n, T))
    for i in range(n):
        v_next = [v[i, t + 1] if t + 1 < T else nv[i] for t in range(T)]
        delta = [r[i, t] + gamma * (1 - d[i, t]) * v_next[t] - v[i, t] for t in range(T)]
        for t in range(T):
            total, weight = 0.0, 1.0
            for k in range(t, T):
                total += weight * delta[k]
                if d[i, k]:
                    break
                weight *= gamma * lam
            out[i, t] = total
    return out


def returns_by_definition(rewards, dones, next_value, gamma: float) -> np.ndarray:
    """G_t = sum_l gamma^l r_{t+l} until the episode ends, plus gamma^(T-t) V(s_T) if it has not."""
    r, d, nv = rewards.numpy(), dones.numpy(), next_value.numpy()
    n, T = r.shape
    out = np.zeros((n, T))
    for i in range(n):
        for t in range(T):
            total, weight, ended = 0.0, 1.0, False
            for k in range(t, T):
                total += weight * r[i, k]
                weight *= gamma
                if d[i, k]:
                    ended = True
                    break
            out[i, t] = total + (0.0 if ended else weight * nv[i])
    return out


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("gamma,lam", [(0.99, 0.95), (0.9, 0.5), (1.0, 1.0), (0.5, 0.0)])
def test_gae_matches_the_definition(seed: int, gamma: float, lam: float) -> None:
    rewards, values, dones, next_value = random_rollout(seed, n=3, T=17)
    expected = gae_by_definition(rewards, values, dones, next_value, gamma, lam)
    advantages, returns = rl.gae(rewards, values, dones, next_value, gamma, lam)
    np.testing.assert_allclose(advantages.numpy(), expected, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(returns.numpy(), expected + values.numpy(), rtol=1e-10, atol=1e-10)
    if "gae" in ns:
        nb_adv, nb_ret = ns["gae"](rewards, values, dones, next_value, gamma, lam)
        np.testing.assert_allclose(nb_adv.numpy(), expected, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(nb_ret.numpy(), returns.numpy(), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("seed", range(3))
def test_gae_limits_are_td_error_and_monte_carlo(seed: int) -> None:
    rewards, values, dones, next_value = random_rollout(seed, n=4, T=30)
    gamma = 0.97
    td0, _ = rl.gae(rewards, values, dones, next_value, gamma, 0.0)
    v_next = torch.cat([values[:, 1:], next_value[:, None]], dim=1)
    torch.testing.assert_close(td0, rewards + gamma * (1 - dones) * v_next - values)
    mc, _ = rl.gae(rewards, values, dones, next_value, gamma, 1.0)
    G = rl.discounted_returns(rewards, dones, gamma, next_value)
    torch.testing.assert_close(mc, G - values)


@pytest.mark.parametrize("seed", range(3))
def test_discounted_returns_match_the_definition(seed: int) -> None:
    rewards, _, dones, next_value = random_rollout(seed, n=2, T=25, p_done=0.15)
    expected = returns_by_definition(rewards, dones, next_value, 0.9)
    np.testing.assert_allclose(rl.discounted_returns(rewards, dones, 0.9, next_value).numpy(), expected, atol=1e-10)
    no_bootstrap = returns_by_definition(rewards, dones, torch.zeros_like(next_value), 0.9)
    np.testing.assert_allclose(rl.discounted_returns(rewards, dones, 0.9).numpy(), no_bootstrap, atol=1e-10)


def test_gae_is_batched_over_leading_dimensions() -> None:
    rewards, values, dones, next_value = random_rollout(0, n=6, T=9)
    flat, _ = rl.gae(rewards, values, dones, next_value, 0.99, 0.95)
    shaped, _ = rl.gae(*(x.reshape(2, 3, 9) for x in (rewards, values, dones)), next_value.reshape(2, 3), 0.99, 0.95)
    torch.testing.assert_close(shaped.reshape(6, 9), flat)


def test_bad_arguments_raise_value_error() -> None:
    rewards, values, dones, next_value = random_rollout(0, n=2, T=5)
    with pytest.raises(ValueError, match="same shape"):
        rl.gae(rewards, values[:, :4], dones, next_value, 0.99, 0.95)
    with pytest.raises(ValueError, match="lam"):
        rl.gae(rewards, values, dones, next_value, 0.99, 1.5)
    with pytest.raises(ValueError, match="next_value"):
        rl.gae(rewards, values, dones, next_value[:1], 0.99, 0.95)
    with pytest.raises(ValueError, match="gamma"):
        rl.discounted_returns(rewards, dones, -0.1)
    x = torch.zeros(4)
    with pytest.raises(ValueError, match="clip_coef"):
        rl.ppo_losses(x, x, x, x, x, x, x, clip_coef=0.0)


def cleanrl_losses(newlogprob, b_logprobs, mb_advantages, newvalue, b_values, b_returns, entropy, clip_coef,
                   vf_coef, ent_coef, clip_vloss):
    """The minibatch loss exactly as cleanrl/ppo.py writes it inline (advantages already normalised)."""
    logratio = newlogprob - b_logprobs
    ratio = logratio.exp()
    approx_kl = ((ratio - 1) - logratio).mean()
    clipfrac = ((ratio - 1.0).abs() > clip_coef).float().mean()
    pg_loss1 = -mb_advantages * ratio
    pg_loss2 = -mb_advantages * torch.clamp(ratio, 1 - clip_coef, 1 + clip_coef)
    pg_loss = torch.max(pg_loss1, pg_loss2).mean()
    if clip_vloss:
        v_loss_unclipped = (newvalue - b_returns) ** 2
        v_clipped = b_values + torch.clamp(newvalue - b_values, -clip_coef, clip_coef)
        v_loss = 0.5 * torch.max(v_loss_unclipped, (v_clipped - b_returns) ** 2).mean()
    else:
        v_loss = 0.5 * ((newvalue - b_returns) ** 2).mean()
    entropy_loss = entropy.mean()
    loss = pg_loss - ent_coef * entropy_loss + v_loss * vf_coef
    return loss, pg_loss, v_loss, entropy_loss, approx_kl, clipfrac


def random_minibatch(seed: int, n: int = 64) -> tuple[torch.Tensor, ...]:
    """new/old log-probs (ratios spread around 1, many outside the clip band), advantages, values, returns, entropy."""
    gen = torch.Generator().manual_seed(seed)
    old = -torch.rand(n, generator=gen) * 2
    new = old + 0.4 * torch.randn(n, generator=gen)
    adv = torch.randn(n, generator=gen)
    old_v, ret = torch.randn(n, generator=gen), torch.randn(n, generator=gen)
    new_v = old_v + 0.5 * torch.randn(n, generator=gen)
    return new, old, adv, new_v, old_v, ret, torch.rand(n, generator=gen)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("clip_vloss", [True, False])
@pytest.mark.parametrize("clip_coef", [0.1, 0.2, 0.3])
def test_ppo_losses_match_cleanrl(seed: int, clip_vloss: bool, clip_coef: float) -> None:
    batch = random_minibatch(seed)
    expected = cleanrl_losses(*batch, clip_coef, 0.5, 0.01, clip_vloss)
    implementations = [rl.ppo_losses] + ([ns["ppo_losses"]] if "ppo_losses" in ns else [])
    for ppo_losses in implementations:
        got = ppo_losses(*batch, clip_coef=clip_coef, vf_coef=0.5, ent_coef=0.01, clip_vloss=clip_vloss)
        for name, a, b in zip(["loss", "policy", "value", "entropy", "approx_kl", "clip_fraction"], got, expected):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7, msg=f"{name} differs from CleanRL's")
    assert 0.1 < float(expected[-1]) < 0.9, "the random batch should have ratios both inside and outside the band"


def test_clipped_objective_stops_the_gradient_outside_the_band() -> None:
    new, old, adv, *_ = random_minibatch(0, n=200)
    new = new.clone().requires_grad_(True)
    zeros = torch.zeros_like(adv)
    out = rl.ppo_losses(new, old, adv, zeros, zeros, zeros, zeros, clip_coef=0.2)
    out.policy.backward()
    ratio = (new - old).exp().detach()
    # the objective is flat (no gradient) where the ratio already moved past the band in the advantage's favour
    flat = ((adv > 0) & (ratio > 1.2)) | ((adv < 0) & (ratio < 0.8))
    assert flat.any() and (~flat).any()
    torch.testing.assert_close(new.grad[flat], torch.zeros(int(flat.sum())))
    # elsewhere it is the plain importance-weighted policy gradient: d/dlogp of -ratio A / n = -ratio A / n
    torch.testing.assert_close(new.grad[~flat], (-ratio * adv / len(adv))[~flat])


def test_mask_restricts_every_mean_to_the_real_tokens() -> None:
    batch = [x.reshape(4, 16) for x in random_minibatch(1)]
    mask = torch.zeros(4, 16)
    mask[0, :3], mask[1, :16], mask[2, :1], mask[3, :9] = 1, 1, 1, 1
    keep = mask.bool()
    masked = rl.ppo_losses(*batch, mask=mask)
    selected = rl.ppo_losses(*(x[keep] for x in batch))
    for a, b in zip(masked, selected):
        torch.testing.assert_close(a, b)


def test_notebook_value_iteration_matches_a_linear_solve() -> None:
    if "value_iteration" not in ns:
        pytest.skip("the notebook does not exist yet")
    P, R = ns["gridworld"]()                   # P (S, A, S), R (S, A)
    gamma = 0.9
    V, policy = ns["value_iteration"](P, R, gamma, tol=1e-12)
    # the greedy policy's exact value, from (I - gamma P_pi) V = R_pi, must equal V* from value iteration
    S = P.shape[0]
    P_pi, R_pi = P[np.arange(S), policy], R[np.arange(S), policy]
    V_pi = np.linalg.solve(np.eye(S) - gamma * P_pi, R_pi)
    np.testing.assert_allclose(V, V_pi, atol=1e-8)
    np.testing.assert_allclose(ns["policy_evaluation"](P, R, np.eye(P.shape[1])[policy], gamma), V_pi, atol=1e-8)


@pytest.mark.parametrize("seed", range(3))
def test_exercise_solutions(seed: int) -> None:
    if "returns_to_go" not in ns:
        pytest.skip("the notebook does not exist yet")
    rng = np.random.default_rng(seed)
    rewards = rng.standard_normal(int(rng.integers(1, 40)))
    r = torch.tensor(rewards)[None]
    expected = rl.discounted_returns(r, torch.zeros_like(r), 0.95)[0].numpy()
    np.testing.assert_allclose(ns["returns_to_go"](rewards, 0.95), expected, atol=1e-12)
    old_logits = torch.randn(5, generator=torch.Generator().manual_seed(seed))
    new_logits = old_logits + 0.3 * torch.randn(5, generator=torch.Generator().manual_seed(seed + 10))
    p_old, p_new = old_logits.softmax(-1), new_logits.softmax(-1)
    exact = float((p_old * (p_old.log() - p_new.log())).sum())
    k1, k3 = ns["kl_estimates"](old_logits, new_logits, 200_000, seed=seed)
    assert k1 == pytest.approx(exact, rel=0.1, abs=1e-4) and k3 == pytest.approx(exact, rel=0.05, abs=1e-4)


def test_notebook_agent_log_probs_match_a_categorical() -> None:
    if "Agent" not in ns:
        pytest.skip("the notebook does not exist yet")
    torch.manual_seed(0)
    agent = ns["Agent"]()
    obs = torch.randn(7, 4)
    action, logp, entropy, value = agent.act(obs)
    dist = torch.distributions.Categorical(logits=agent.actor(obs))
    torch.testing.assert_close(logp, dist.log_prob(action))
    torch.testing.assert_close(entropy, dist.entropy())
    assert value.shape == (7,) and action.shape == (7,)
