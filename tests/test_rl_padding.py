"""utils.rl on variable-length episodes, the real case of RLHF: responses that stop at an end token are
right-padded to one length, with dones at each response's last real token and a mask over the real tokens.
The padded batch must give exactly what each unpadded response gives alone — advantages, returns, whitened
advantages and every PPO loss — whatever the padding holds; and padding must get no gradient."""

from __future__ import annotations

import pytest
import torch

from utils import rl

GAMMA, LAM = 1.0, 0.95  # RLHF's choice (05.02)


def padded_batch(seed: int, lengths: list[int], T: int, garbage: float = 50.0) -> dict[str, torch.Tensor]:
    """Per-token tensors (B, T) float64 whose padded steps hold large random garbage, and the mask (B, T)."""
    gen = torch.Generator().manual_seed(seed)
    mask = torch.zeros(len(lengths), T, dtype=torch.float64)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
    batch = {}
    for name in ("rewards", "values", "old_logp", "new_logp", "new_values", "entropy"):
        real = torch.randn(len(lengths), T, generator=gen, dtype=torch.float64)
        pad = garbage * torch.randn(len(lengths), T, generator=gen, dtype=torch.float64)
        batch[name] = torch.where(mask.bool(), real, pad)
    batch["old_logp"] = -batch["old_logp"].abs()                 # log-probabilities
    batch["new_logp"] = batch["old_logp"] + 0.3 * torch.where(mask.bool(), batch["new_logp"], 0.0)
    batch["mask"] = mask
    return batch


def one_response(rewards: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE of one unpadded response (L,): one episode that ends at its last token, nothing after it."""
    dones = torch.zeros_like(rewards)
    dones[-1] = 1
    return rl.gae(rewards, values, dones, torch.zeros(()), GAMMA, LAM)


CASES = [([7, 3, 1, 5], 7), ([2, 2], 6), ([9, 4, 8], 9)]


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("lengths,T", CASES)
def test_padded_gae_equals_each_response_alone(seed: int, lengths: list[int], T: int) -> None:
    b = padded_batch(seed, lengths, T)
    dones = rl.dones_from_mask(b["mask"])
    next_value = torch.randn(len(lengths), dtype=torch.float64) * 50  # ignored: every row ends with a done
    adv, ret = rl.gae(b["rewards"], b["values"], dones, next_value, GAMMA, LAM, mask=b["mask"])
    for i, n in enumerate(lengths):
        alone_adv, alone_ret = one_response(b["rewards"][i, :n], b["values"][i, :n])
        torch.testing.assert_close(adv[i, :n], alone_adv)
        torch.testing.assert_close(ret[i, :n], alone_ret)
        assert (adv[i, n:] == 0).all() and (ret[i, n:] == 0).all(), "padded steps get advantage and return 0"


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("lengths,T", CASES)
def test_padded_whitening_and_losses_equal_the_unpadded_responses(seed: int, lengths: list[int], T: int) -> None:
    b = padded_batch(seed, lengths, T)
    mask, real = b["mask"], b["mask"].bool()
    adv, ret = rl.gae(b["rewards"], b["values"], rl.dones_from_mask(mask), torch.zeros(len(lengths)), GAMMA, LAM,
                      mask=mask)
    adv = rl.whiten(adv, mask)
    # the same computation on the unpadded responses, concatenated token by token
    pieces = [one_response(b["rewards"][i, :n], b["values"][i, :n]) for i, n in enumerate(lengths)]
    flat_adv = rl.whiten(torch.cat([a for a, _ in pieces]))
    flat_ret = torch.cat([r for _, r in pieces])
    torch.testing.assert_close(adv[real], flat_adv)
    assert (adv[~real] == 0).all()

    new_logp = b["new_logp"].clone().requires_grad_(True)
    padded = rl.ppo_losses(new_logp, b["old_logp"], adv, b["new_values"], b["values"], ret, b["entropy"],
                           clip_coef=0.2, vf_coef=0.1, ent_coef=0.01, mask=mask)
    alone = rl.ppo_losses(b["new_logp"][real], b["old_logp"][real], flat_adv, b["new_values"][real],
                          b["values"][real], flat_ret, b["entropy"][real], clip_coef=0.2, vf_coef=0.1, ent_coef=0.01)
    for name, x, y in zip(padded._fields, padded, alone):
        torch.testing.assert_close(x, y, msg=f"{name}: padded batch != unpadded responses")
    padded.loss.backward()
    assert (new_logp.grad[~real] == 0).all(), "padded tokens must get no gradient"
    assert new_logp.grad[real].abs().sum() > 0


def test_padding_that_is_not_a_number_does_not_leak() -> None:
    b = padded_batch(0, [4, 2, 6], 6)
    real = b["mask"].bool()
    nan = {k: torch.where(real, v, float("nan")) for k, v in b.items() if k != "mask"}
    adv, ret = rl.gae(nan["rewards"], nan["values"], rl.dones_from_mask(b["mask"]), torch.zeros(3), GAMMA, LAM,
                      mask=b["mask"])
    adv = rl.whiten(adv, b["mask"])
    out = rl.ppo_losses(nan["new_logp"], nan["old_logp"], adv, nan["new_values"], nan["values"], ret,
                        nan["entropy"], mask=b["mask"])
    assert torch.isfinite(adv).all() and torch.isfinite(ret).all()
    assert all(torch.isfinite(x) for x in out), out


def test_dones_from_mask() -> None:
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0], [0, 0, 0, 0, 0]])
    expected = torch.tensor([[0, 0, 1, 0, 0], [0, 0, 0, 0, 1], [1, 0, 0, 0, 0], [0, 0, 0, 0, 0]])
    torch.testing.assert_close(rl.dones_from_mask(mask), expected.float())
    assert rl.dones_from_mask(mask.double()).dtype == torch.float64


def test_whiten_is_cleanrls_normalisation_over_the_real_elements() -> None:
    x = torch.randn(5, 8, generator=torch.Generator().manual_seed(0)) * 4 + 3
    torch.testing.assert_close(rl.whiten(x), (x - x.mean()) / (x.std() + 1e-8))
    mask = torch.rand(5, 8, generator=torch.Generator().manual_seed(1)) < 0.6
    w = rl.whiten(x, mask)
    assert abs(w[mask].mean().item()) < 1e-5 and w[mask].std().item() == pytest.approx(1.0, rel=1e-4)
    assert (w[~mask] == 0).all()


def test_bad_masks_and_dones_raise() -> None:
    rewards = torch.zeros(2, 5)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    with pytest.raises(ValueError, match="must end its episode"):  # done missing where the padding starts
        rl.gae(rewards, rewards, torch.zeros(2, 5), torch.zeros(2), GAMMA, LAM, mask=mask)
    with pytest.raises(ValueError, match="mask must have the shape"):
        rl.gae(rewards, rewards, rl.dones_from_mask(mask), torch.zeros(2), GAMMA, LAM, mask=mask[:, :4])
    with pytest.raises(ValueError, match="mask must have the shape"):
        rl.whiten(rewards, mask[:1])
    with pytest.raises(ValueError, match="at least 2 real elements"):
        rl.whiten(rewards, torch.zeros(2, 5))
    with pytest.raises(ValueError, match="mask must have the shape"):
        rl.ppo_losses(*[rewards] * 7, mask=mask.T)
