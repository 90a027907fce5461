"""05.02's from-scratch RLHF pieces against trl 1.16 and against the formulas written out independently:
the Bradley–Terry loss == trl's RewardTrainer.compute_loss on the same batch (its own collator, with and without
margins, our reward model and a Hugging Face one), the per-token KL reward shaping (padded responses included),
GAE on responses through utils.rl (gamma = 1, lam = 0.95, dones at the last real token) against the sum
definition, utils.rl's clipped PPO losses on (B, R) tokens, the policy's shifted log-probabilities, and the
exercise solutions."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from utils import rl
from utils.models.gpt import GPT, GPTConfig
from utils.notebooks import notebook_definitions

NOTEBOOK = Path(__file__).resolve().parents[2] / "05_frontier" / "02_reward_models_and_rlhf.ipynb"
ns = notebook_definitions(NOTEBOOK, solutions=True)
V, BLOCK = 13, 16


def tiny_gpt(seed: int) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=V, block_size=BLOCK, n_layer=1, n_head=2, n_embd=16))


@pytest.fixture(scope="module")
def reward_trainer(tmp_path_factory: pytest.TempPathFactory):
    """A real trl RewardTrainer (its own model is a throw-away tiny GPT-2; compute_loss gets ours)."""
    import datasets
    from tokenizers import Tokenizer, models
    from transformers import GPT2Config, GPT2ForSequenceClassification, PreTrainedTokenizerFast
    from trl import RewardConfig, RewardTrainer

    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"<pad>": 0}, unk_token="<pad>")),
                                  pad_token="<pad>")
    stub = GPT2ForSequenceClassification(GPT2Config(vocab_size=V, n_positions=BLOCK, n_embd=8, n_layer=1, n_head=1,
                                                    num_labels=1, pad_token_id=0))
    with warnings.catch_warnings():  # trl 1.16 passes transformers a renamed argument (gradient_checkpointing)
        warnings.simplefilter("ignore", FutureWarning)
        args = RewardConfig(output_dir=str(tmp_path_factory.mktemp("rm")), report_to="none", use_cpu=True, bf16=False)
    return RewardTrainer(model=stub, args=args, processing_class=tok,
                         train_dataset=datasets.Dataset.from_dict({"chosen_ids": [[1]], "rejected_ids": [[2]]}))


def random_pairs(gen: torch.Generator, B: int, T: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randint(1, V, (B, T), generator=gen), torch.randint(1, V, (B, T), generator=gen)


def test_notebook_defines_everything() -> None:
    wanted = {"bradley_terry_loss", "RewardModel", "ForTrl", "token_logprobs", "shaped_rewards",
              "response_advantages", "gae_by_definition", "Policy", "preference_probability", "kl_k3"}
    assert wanted <= set(ns), sorted(wanted - set(ns))
    # the PPO pieces that run are utils.rl's, not copies in the notebook
    assert not {"gae", "ppo_losses", "whiten"} & set(ns), "the notebook should call utils.rl, not redefine it"
    assert (ns["GAMMA"], ns["LAM"]) == (1.0, 0.95)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("with_margin", [False, True])
def test_bradley_terry_equals_trl_reward_trainer(reward_trainer, seed: int, with_margin: bool) -> None:
    from trl.trainer.reward_trainer import DataCollatorForPreference

    gen = torch.Generator().manual_seed(seed)
    B, T = int(torch.randint(1, 9, (1,), generator=gen)), int(torch.randint(2, BLOCK + 1, (1,), generator=gen))
    chosen, rejected = random_pairs(gen, B, T)
    margin = torch.rand(B, generator=gen) * 2 if with_margin else None
    rm = ns["RewardModel"](tiny_gpt(seed))
    torch.nn.init.normal_(rm.head.weight, std=1.0)                # rewards of order 1, not ~0
    features = [{"chosen_ids": c.tolist(), "rejected_ids": r.tolist()} for c, r in zip(chosen, rejected)]
    if with_margin:
        for f, m in zip(features, margin):
            f["margin"] = float(m)
    batch = DataCollatorForPreference(pad_token_id=0)(features)
    theirs = reward_trainer.compute_loss(ns["ForTrl"](rm), batch)
    ours = ns["bradley_terry_loss"](rm(chosen), rm(rejected), margin)
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-7)
    # the gradients agree too: the same objective, not only the same number
    g_ours = torch.autograd.grad(ours, rm.head.weight)[0]
    g_theirs = torch.autograd.grad(reward_trainer.compute_loss(ns["ForTrl"](rm), batch), rm.head.weight)[0]
    torch.testing.assert_close(g_ours, g_theirs, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("seed", range(3))
def test_bradley_terry_equals_trl_on_a_hf_sequence_classifier(reward_trainer, seed: int) -> None:
    from transformers import GPT2Config, GPT2ForSequenceClassification
    from trl.trainer.reward_trainer import DataCollatorForPreference

    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    hf = GPT2ForSequenceClassification(GPT2Config(vocab_size=V, n_positions=BLOCK, n_embd=16, n_layer=1, n_head=2,
                                                  num_labels=1, pad_token_id=0)).eval()
    chosen, rejected = random_pairs(gen, 5, 7)
    batch = DataCollatorForPreference(pad_token_id=0)(
        [{"chosen_ids": c.tolist(), "rejected_ids": r.tolist()} for c, r in zip(chosen, rejected)])
    with torch.no_grad():
        ours = ns["bradley_terry_loss"](hf(chosen).logits[:, 0], hf(rejected).logits[:, 0])
        theirs = reward_trainer.compute_loss(hf, batch)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


def test_bradley_terry_is_the_pairwise_likelihood() -> None:
    r_w, r_l = torch.tensor([2.0, -1.0, 0.0, 50.0, -50.0]), torch.tensor([0.0, 1.0, 0.0, 0.0, 0.0])
    expected = -np.mean(np.log(1 / (1 + np.exp(-(r_w - r_l).double().numpy()))))
    assert ns["bradley_terry_loss"](r_w, r_l).item() == pytest.approx(expected, rel=1e-6)
    # only differences matter: shifting every reward changes nothing
    torch.testing.assert_close(ns["bradley_terry_loss"](r_w + 7, r_l + 7), ns["bradley_terry_loss"](r_w, r_l))
    assert torch.isfinite(ns["bradley_terry_loss"](torch.tensor([-1e4]), torch.tensor([1e4])))  # no underflow


@pytest.mark.parametrize("seed", range(4))
def test_shaped_rewards_per_token_kl(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    B, R = 4, int(torch.randint(1, 9, (1,), generator=gen))
    logp, ref_logp = -torch.rand(B, R, generator=gen) * 3, -torch.rand(B, R, generator=gen) * 3
    score, beta = torch.randn(B, generator=gen), float(torch.rand(1, generator=gen))
    logp_before = logp.clone()
    rewards, kl = ns["shaped_rewards"](logp, ref_logp, score, beta)
    expected = np.zeros((B, R))                                   # Ziegler et al. 2019, written per element
    for b in range(B):
        for t in range(R):
            expected[b, t] = -beta * (logp[b, t] - ref_logp[b, t]).item() + (score[b].item() if t == R - 1 else 0)
    np.testing.assert_allclose(rewards.numpy(), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(kl, logp - ref_logp)
    torch.testing.assert_close(logp, logp_before)                 # inputs untouched
    torch.testing.assert_close(rewards.sum(-1), score - beta * kl.sum(-1))


def test_mean_log_ratio_of_sampled_tokens_is_the_kl() -> None:
    gen = torch.Generator().manual_seed(0)
    pi = torch.distributions.Categorical(logits=torch.randn(V, generator=gen))
    ref = torch.distributions.Categorical(logits=torch.randn(V, generator=gen))
    y = pi.sample((200_000,))
    _, kl = ns["shaped_rewards"](pi.log_prob(y)[None], ref.log_prob(y)[None], torch.zeros(1), 0.1)
    assert kl.mean().item() == pytest.approx(torch.distributions.kl_divergence(pi, ref).item(), rel=0.03)


@pytest.mark.parametrize("seed", range(3))
def test_shaped_rewards_of_padded_responses_equal_each_response_alone(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    lengths, R = [5, 2, 1, 4], 5
    mask = (torch.arange(R) < torch.tensor(lengths)[:, None]).float()
    logp, ref_logp = -torch.rand(4, R, generator=gen) * 3, -torch.rand(4, R, generator=gen) * 3
    logp = torch.where(mask.bool(), logp, -1e4)                   # a pad token the policy never writes
    score, beta = torch.randn(4, generator=gen), 0.3
    rewards, kl = ns["shaped_rewards"](logp, ref_logp, score, beta, mask)
    for i, n in enumerate(lengths):
        alone_r, alone_kl = ns["shaped_rewards"](logp[i:i + 1, :n], ref_logp[i:i + 1, :n], score[i:i + 1], beta)
        torch.testing.assert_close(rewards[i, :n], alone_r[0])    # the score sits on the last REAL token
        torch.testing.assert_close(kl[i, :n], alone_kl[0])
        assert (rewards[i, n:] == 0).all() and (kl[i, n:] == 0).all()
    torch.testing.assert_close(rewards.sum(-1), score - beta * kl.sum(-1))


def gae_by_sums(r: np.ndarray, v: np.ndarray, gamma: float, lam: float) -> np.ndarray:
    """A_t = sum_l (γλ)^l δ_{t+l}, δ_t = r_t + γ V_{t+1} - V_t, V_{T} = 0: the definition, not the recursion."""
    B, T = r.shape
    v_next = np.concatenate([v[:, 1:], np.zeros((B, 1))], axis=1)
    delta = r + gamma * v_next - v
    return np.stack([sum((gamma * lam) ** (k - t) * delta[:, k] for k in range(t, T)) for t in range(T)], axis=1)


@pytest.mark.parametrize("seed", range(5))
def test_response_advantages_match_the_sum_definition(seed: int) -> None:
    """utils.rl.gae through the notebook's mapping (one response = one episode, gamma = 1, lam = 0.95, nothing
    after the last real token) == A_t = sum_k (gamma lam)^(k-t) delta_k on each unpadded response."""
    rng = np.random.default_rng(seed)
    B, T = int(rng.integers(1, 5)), int(rng.integers(1, 12))
    lengths = rng.integers(1, T + 1, size=B)
    lengths[0] = T                                                # one response fills the batch's length
    mask = torch.tensor(np.arange(T) < lengths[:, None], dtype=torch.float64)
    r = np.where(mask.numpy() > 0, rng.standard_normal((B, T)), 1e3)  # junk in the padding
    v = np.where(mask.numpy() > 0, rng.standard_normal((B, T)), -1e3)
    adv, ret = ns["response_advantages"](torch.tensor(r), torch.tensor(v), mask)
    for i, n in enumerate(lengths):
        expected = gae_by_sums(r[i:i + 1, :n], v[i:i + 1, :n], 1.0, 0.95)[0]
        np.testing.assert_allclose(adv[i, :n].numpy(), expected, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(ret[i, :n].numpy(), expected + v[i, :n], rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(ns["gae_by_definition"](list(r[i, :n]), list(v[i, :n])), expected, atol=1e-10)
        assert (adv[i, n:] == 0).all() and (ret[i, n:] == 0).all()


@pytest.mark.parametrize("seed", range(3))
def test_utils_rl_gae_limits_on_full_responses(seed: int) -> None:
    """The same utils.rl call with lam = 1 is the return-to-go minus the baseline; lam = 0 is the TD error."""
    rng = np.random.default_rng(seed)
    B, T = int(rng.integers(1, 5)), int(rng.integers(1, 12))
    r, v = rng.standard_normal((B, T)), rng.standard_normal((B, T))
    mask = torch.ones(B, T, dtype=torch.float64)
    args = (torch.tensor(r), torch.tensor(v), rl.dones_from_mask(mask), torch.zeros(B, dtype=torch.float64), 1.0)
    adv1, _ = rl.gae(*args, 1.0, mask=mask)
    np.testing.assert_allclose(adv1.numpy(), np.cumsum(r[:, ::-1], axis=1)[:, ::-1] - v, atol=1e-10)
    adv0, _ = rl.gae(*args, 0.0, mask=mask)
    np.testing.assert_allclose(adv0.numpy(), gae_by_sums(r, v, 1.0, 0.0), atol=1e-10)


def ppo_by_elements(logp, old_logp, adv, values, old_values, returns, clip, clip_v):
    """CleanRL's ppo.py losses, element by element in float64."""
    pg, vf = [], []
    for lp, olp, a, v, ov, ret in zip(*(np.ravel(x) for x in (logp, old_logp, adv, values, old_values, returns))):
        ratio = np.exp(lp - olp)
        pg.append(max(-a * ratio, -a * min(max(ratio, 1 - clip), 1 + clip)))
        v_clipped = ov + min(max(v - ov, -clip_v), clip_v)
        vf.append(0.5 * max((v - ret) ** 2, (v_clipped - ret) ** 2))
    return np.mean(pg), np.mean(vf)


@pytest.mark.parametrize("seed", range(6))
def test_ppo_losses_match_the_elementwise_formula(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    shape = (int(torch.randint(1, 5, (1,), generator=gen)), int(torch.randint(1, 9, (1,), generator=gen)))
    old_logp = -torch.rand(shape, generator=gen) * 3
    logp = old_logp + torch.randn(shape, generator=gen) * 0.4     # ratios on both sides of the clip range
    adv, values, returns = (torch.randn(shape, generator=gen) for _ in range(3))
    old_values = values + torch.randn(shape, generator=gen) * 0.4
    clip = 0.1 + 0.2 * float(torch.rand(1, generator=gen))     # utils.rl clips the value by the same epsilon
    out = rl.ppo_losses(logp, old_logp, adv, values, old_values, returns, torch.zeros(shape), clip_coef=clip,
                        vf_coef=0.1, ent_coef=0.0, mask=torch.ones(shape))   # the notebook's call
    pg, vf, frac = out.policy, out.value, out.clip_fraction
    pg_ref, vf_ref = ppo_by_elements(*(x.double().numpy() for x in (logp, old_logp, adv, values, old_values,
                                                                     returns)), clip, clip)
    assert out.loss.item() == pytest.approx(pg_ref + 0.1 * vf_ref, rel=1e-5, abs=1e-6)
    assert pg.item() == pytest.approx(pg_ref, rel=1e-5, abs=1e-6)
    assert vf.item() == pytest.approx(vf_ref, rel=1e-5, abs=1e-6)
    assert frac.item() == pytest.approx(((logp - old_logp).exp().sub(1).abs() > clip).float().mean().item())


def test_ppo_policy_gradient_is_cut_outside_the_clip_range() -> None:
    adv = torch.tensor([[1.0, 1.0, -1.0, -1.0]])
    old_logp = torch.zeros(1, 4)
    logp = torch.log(torch.tensor([[1.5, 1.05, 0.5, 0.95]])).requires_grad_(True)
    zeros = torch.zeros(1, 4)
    out = rl.ppo_losses(logp, old_logp, adv, zeros, zeros, zeros, zeros, clip_coef=0.2, ent_coef=0.0, mask=zeros + 1)
    pg, frac = out.policy, out.clip_fraction
    (grad,) = torch.autograd.grad(pg, logp)
    # ratio 1.5 with A > 0 and ratio 0.5 with A < 0 are clipped: no gradient; the two inside the range keep theirs
    assert grad[0, 0].item() == 0 and grad[0, 2].item() == 0
    assert grad[0, 1].item() < 0 and grad[0, 3].item() > 0
    assert frac.item() == 0.5
    # at ratio 1 the surrogate is minus the mean advantage
    pg1 = rl.ppo_losses(old_logp, old_logp, adv * 3, zeros, zeros, zeros, zeros).policy
    assert pg1.item() == pytest.approx(-(adv * 3).mean().item())


def test_policy_scores_the_response_tokens_one_position_left() -> None:
    ns["P"] = 5                                                    # the notebook's prompt length, set for the test
    gpt = tiny_gpt(0)
    policy = ns["Policy"](gpt)
    seq = torch.randint(0, V, (3, 12), generator=torch.Generator().manual_seed(1))
    logp, values = policy(seq)
    logits = gpt(seq)[0]                                          # the same weights: a deep copy of gpt
    expected = torch.log_softmax(logits, -1)[:, 4:11].gather(2, seq[:, 5:, None]).squeeze(-1)
    torch.testing.assert_close(logp, expected)
    assert values.shape == (3, 7)


def test_exercise_solutions() -> None:
    ra, rb = torch.randn(50) * 3, torch.randn(50) * 3
    p = ns["preference_probability"](ra, rb)
    torch.testing.assert_close(p + ns["preference_probability"](rb, ra), torch.ones(50))
    torch.testing.assert_close(-torch.log(p).mean(), ns["bradley_terry_loss"](ra, rb), rtol=1e-5, atol=1e-6)
    gen = torch.Generator().manual_seed(3)
    pi = torch.distributions.Categorical(logits=torch.randn(V, generator=gen))
    ref = torch.distributions.Categorical(logits=torch.randn(V, generator=gen))
    y = pi.sample((100_000,))
    k3 = ns["kl_k3"](pi.log_prob(y), ref.log_prob(y))
    assert (k3 >= 0).all()
    assert k3.mean().item() == pytest.approx(torch.distributions.kl_divergence(pi, ref).item(), rel=0.05)
