"""01.06 · Autoencoders and VAEs: the notebook's from-scratch pieces against torch.distributions.

The notebook's definitions are imported without running it (utils.notebooks.notebook_definitions).
"""

from pathlib import Path

import pytest
import torch
from torch.distributions import ContinuousBernoulli, Independent, Normal, kl_divergence

from utils.notebooks import notebook_definitions

NOTEBOOK = Path(__file__).resolve().parents[2] / "01_deep_learning" / "06_autoencoders_and_vaes.ipynb"


@pytest.fixture(scope="module")
def nb():
    return notebook_definitions(NOTEBOOK, solutions=True)


def test_bernoulli_mass_is_one_over_the_continuous_bernoulli_normaliser(nb):
    """The Bernoulli formula on grey levels integrates to 1/C(λ) < 1: the BCE is a pseudo-likelihood (issue 18)."""
    torch.manual_seed(0)
    lam = torch.cat([torch.rand(200, dtype=torch.float64) * 0.98 + 0.01, torch.tensor([0.2, 0.8], dtype=torch.float64)])
    lam = lam[(lam - 0.5).abs() > 0.01]  # the closed form is 0/0 at λ = ½ (torch uses a Taylor series there)
    ours = nb["bernoulli_mass"](lam)
    log_c = ContinuousBernoulli(probs=lam).log_prob(torch.zeros_like(lam)) - torch.log1p(-lam)  # log C(λ)
    torch.testing.assert_close(ours, torch.exp(-log_c), rtol=1e-9, atol=0)
    grey = torch.linspace(0, 1, 20_001, dtype=torch.float64)
    numeric = torch.trapezoid(lam[:, None] ** grey * (1 - lam[:, None]) ** (1 - grey), grey)
    torch.testing.assert_close(ours, numeric, rtol=1e-7, atol=0)
    assert (ours < 0.5).all() and (ours > 0).all()


def test_kl_to_standard_normal_equals_torch(nb):
    torch.manual_seed(1)
    mu, logvar = 2 * torch.randn(7, 5, dtype=torch.float64), torch.randn(7, 5, dtype=torch.float64)
    q = Independent(Normal(mu, torch.exp(0.5 * logvar)), 1)
    p = Independent(Normal(torch.zeros_like(mu), torch.ones_like(mu)), 1)
    torch.testing.assert_close(nb["kl_to_standard_normal"](mu, logvar), kl_divergence(q, p), rtol=1e-12, atol=1e-12)


def test_negative_elbo_reconstruction_is_minus_bernoulli_log_prob_on_binary_pixels(nb):
    """On black-and-white pixels the summed BCE is exactly −log of a Bernoulli likelihood (a normalised pmf)."""
    torch.manual_seed(2)
    x = (torch.rand(4, 784) < 0.3).float()
    logits, mu, logvar = torch.randn(4, 784), torch.randn(4, 3), torch.randn(4, 3)
    reconstruction, _ = nb["negative_elbo"](x, logits, mu, logvar)
    bernoulli = Independent(torch.distributions.Bernoulli(logits=logits), 1)
    torch.testing.assert_close(reconstruction, -bernoulli.log_prob(x), rtol=1e-5, atol=1e-3)
