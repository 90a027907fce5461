"""01.01 · Neural networks from scratch: the activation derivatives and the sigmoid-chain gradient.

The notebook's definitions are imported without running it (utils.notebooks.notebook_definitions).
"""

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from utils.notebooks import notebook_definitions

NOTEBOOK = Path(__file__).resolve().parents[2] / "01_deep_learning" / "01_neural_networks_from_scratch.ipynb"


@pytest.fixture(scope="module")
def nb():
    return notebook_definitions(NOTEBOOK, solutions=True)


def test_sigmoid_slope_is_at_most_a_quarter(nb):
    z = np.linspace(-20, 20, 400_001)
    assert nb["sigmoid_grad"](z).max() == pytest.approx(0.25, abs=1e-12)


def test_sigmoid_chain_gradient_equals_the_product_of_layer_jacobians(nb):
    """The notebook's autograd ratio, recomputed as v^T J_10 ... J_1 with J_k = diag(σ'(z_k)) W_k (issue 18, item 4)."""
    for scale in (1.0, 8.0):
        gen = torch.Generator().manual_seed(0)  # the same draws, in the same order, as the notebook's function
        x = torch.randn(32, 64, dtype=torch.float64, generator=gen)
        h, jacobians = x, []
        for _ in range(10):
            W = scale * torch.randn(64, 64, dtype=torch.float64, generator=gen) / math.sqrt(64)
            s = torch.sigmoid(h @ W.T)
            jacobians.append((s * (1 - s)).unsqueeze(-1) * W)  # (32, 64, 64): ∂h_k/∂h_{k-1} per example
            h = s
        v = torch.randn(64, dtype=torch.float64, generator=gen)
        g = v.expand(32, 64).unsqueeze(1)  # (32, 1, 64)
        for J in reversed(jacobians):
            g = g @ J
        expected = (g.squeeze(1).norm(dim=1) / v.norm()).mean().item()
        assert nb["sigmoid_chain_gradient"](scale) == pytest.approx(expected, rel=1e-10)
    # the claim of the notebook: the weights count too, "at least 4^10-fold" is false for large weights
    assert nb["sigmoid_chain_gradient"](8.0) > 100 * 0.25**10
