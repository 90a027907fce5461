"""01.05 · Recurrent networks: the notebook's cells, Jacobians and initialisations against PyTorch.

The notebook's definitions are imported without running it (utils.notebooks.notebook_definitions).
"""

import math
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from utils.notebooks import notebook_definitions

NOTEBOOK = Path(__file__).resolve().parents[2] / "01_deep_learning" / "05_recurrent_networks.ipynb"


@pytest.fixture(scope="module")
def nb():
    return notebook_definitions(NOTEBOOK, solutions=True)


@pytest.mark.parametrize("kind, n_blocks", [("rnn", 1), ("lstm", 4), ("gru", 3)])
def test_cells_equal_torch(nb, kind, n_blocks):
    torch.manual_seed(0)
    B, T, C, H = 2, 6, 3, 5
    x, h0, c0 = torch.randn(B, T, C, dtype=torch.float64), torch.randn(B, H, dtype=torch.float64), torch.randn(B, H, dtype=torch.float64)
    params = nb["random_params"](C, H, n_blocks=n_blocks)
    module = nb["copy_into"]({"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[kind](C, H, batch_first=True, dtype=torch.float64), params)
    state = (h0, c0) if kind == "lstm" else h0
    ours, _ = nb["unroll"](nb[f"{kind}_cell"], x, state, params)
    theirs, _ = module(x, (h0[None], c0[None]) if kind == "lstm" else h0[None])
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-10)


def test_step_jacobian_norms_match_autograd_and_respect_the_operator_norm(nb):
    """‖∂h_t/∂h_{t-1}‖₂ along a trajectory, by the notebook's formula and by autograd (issue 18, per-step bound)."""
    torch.manual_seed(1)
    B, T, C, H = 2, 5, 3, 6
    params = nb["random_params"](C, H, gain=1.0)
    x, h0 = torch.randn(B, T, C, dtype=torch.float64), torch.randn(B, H, dtype=torch.float64)
    ours = nb["step_jacobian_norms"](params, x, h0)  # (B, T)
    assert ours.shape == (B, T)
    h = h0
    for t in range(T):
        for b in range(B):
            J = torch.autograd.functional.jacobian(lambda hb: nb["rnn_cell"](x[b : b + 1, t], hb[None], params)[0], h[b])
            torch.testing.assert_close(ours[b, t], torch.linalg.matrix_norm(J, ord=2), rtol=1e-10, atol=1e-12)
        h = nb["rnn_cell"](x[:, t], h, params)
    assert (ours <= torch.linalg.matrix_norm(params[1], ord=2) + 1e-12).all()


def test_random_matrix_gain_one_has_operator_norm_near_two_and_radius_near_one(nb):
    """The premise of the per-step / long-run distinction: σ_max ≈ 2·gain while ρ ≈ gain, for large H."""
    torch.manual_seed(2)
    W_hh = nb["random_params"](4, 400, gain=1.0)[1]
    assert abs(torch.linalg.matrix_norm(W_hh, ord=2).item() - 2) < 0.15
    assert abs(torch.linalg.eigvals(W_hh).abs().max().item() - 1) < 0.1


def test_identity_init_makes_a_relu_rnn_carry_its_state_unchanged(nb):
    """IRNN (issue 18, item 3): with W_hh = I and zero biases, zero inputs leave a non-negative state unchanged,
    and every step's Jacobian is the identity while the units are active."""
    torch.manual_seed(3)
    rnn = nn.RNN(4, 6, batch_first=True, nonlinearity="relu", dtype=torch.float64)
    nb["identity_init"](rnn)
    h0 = torch.rand(2, 6, dtype=torch.float64) + 0.1  # active units
    out, h_n = rnn(torch.zeros(2, 50, 4, dtype=torch.float64), h0[None])
    torch.testing.assert_close(out, h0[:, None].expand(2, 50, 6), rtol=0, atol=0)
    h0.requires_grad_(True)
    out, _ = rnn(torch.zeros(1, 50, 4, dtype=torch.float64), h0[:1, None].transpose(0, 1))
    v = torch.randn(6, dtype=torch.float64)
    (out[0, -1] @ v).backward()
    torch.testing.assert_close(h0.grad[0], v, rtol=0, atol=1e-12)  # ∂L/∂h_0 = v after 50 identity Jacobians
