"""00.05 · Calculus and autograd: the Taylor orders, the Jacobian helpers and the divergence experiment.

The notebook's definitions are imported without running it (utils.notebooks.notebook_definitions).
"""

from pathlib import Path

import numpy as np
import pytest
import torch

from utils.notebooks import notebook_definitions

NOTEBOOK = Path(__file__).resolve().parents[2] / "00_prerequisites" / "05_calculus_and_autograd.ipynb"


@pytest.fixture(scope="module")
def nb():
    return notebook_definitions(NOTEBOOK, solutions=True)


@pytest.mark.parametrize("x0", [-2.3, 0.1, 1.9])
def test_taylor_orders_on_exp(nb, x0):
    hs = np.logspace(-3, -1, 15)
    err1, err2 = nb["taylor_errors"](np.exp, np.exp, np.exp, x0, hs)
    slopes = [np.polyfit(np.log(hs), np.log(err), 1)[0] for err in (err1, err2)]
    assert slopes == pytest.approx([2.0, 3.0], abs=0.1)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_numerical_jacobian_matches_torch_on_random_maps(nb, seed):
    gen = torch.Generator().manual_seed(seed)
    n, m = int(torch.randint(1, 6, (1,), generator=gen)), int(torch.randint(1, 6, (1,), generator=gen))
    W = torch.randn(m, n, dtype=torch.float64, generator=gen)
    x = torch.randn(n, dtype=torch.float64, generator=gen)

    def fn(v):
        return torch.tanh(W @ v) * (W @ v.exp())

    expected = torch.autograd.functional.jacobian(fn, x)
    assert torch.allclose(nb["numerical_jacobian"](fn, x), expected, rtol=0, atol=1e-7)


def test_hand_written_jacobian_of_f_at_random_points(nb):
    gen = torch.Generator().manual_seed(5)
    for _ in range(20):
        u = 3 * torch.randn(4, dtype=torch.float64, generator=gen)
        expected = torch.autograd.functional.jacobian(nb["f_vec"], u)
        assert torch.allclose(nb["jacobian_f"](u), expected, rtol=1e-12, atol=1e-12)


def test_the_experiment_separates_converging_from_diverging_rates(nb):
    Q3, _ = np.linalg.qr(np.random.default_rng(42).standard_normal((3, 3)))  # A3 is computed, so not imported:
    nb["A3"] = Q3 @ np.diag([0.3, 2.0, 6.5]) @ Q3.T                          # rebuilt the notebook's way
    limit = 2 / 6.5
    assert nb["gd_loss_ratio"](0.97 * limit) < 1 < nb["gd_loss_ratio"](1.03 * limit)
    lr = nb["diverging_lr"]()
    assert nb["gd_loss_ratio"](lr) > 1 > nb["gd_loss_ratio"](0.97 * lr)
