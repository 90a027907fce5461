"""01.02 · PyTorch fundamentals: the notebook's AUROC against scikit-learn's.

The notebook's definitions are imported without running it (utils.notebooks.notebook_definitions).
"""

from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from utils.notebooks import notebook_definitions

NOTEBOOK = Path(__file__).resolve().parents[2] / "01_deep_learning" / "02_pytorch_fundamentals.ipynb"


@pytest.fixture(scope="module")
def nb():
    return notebook_definitions(NOTEBOOK, solutions=True)


@pytest.mark.parametrize("seed", range(5))
def test_auroc_equals_sklearn_with_ties(nb, seed):
    """Confidence vs correctness (issue 18, item 5): ties are common (float32 softmax saturates at 1.0)."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 400))
    scores = torch.from_numpy(rng.integers(0, 6, size=n).astype(np.float32) / 5)  # many ties
    positive = torch.from_numpy(rng.random(n) < 0.7)
    positive[0], positive[1] = True, False  # both classes present
    assert nb["auroc"](scores, positive) == pytest.approx(roc_auc_score(positive.numpy(), scores.numpy()), abs=1e-12)


def test_auroc_is_one_half_for_an_unrelated_score_and_one_for_a_perfect_one(nb):
    positive = torch.tensor([True, False] * 500)
    assert nb["auroc"](torch.ones(1000), positive) == 0.5
    assert nb["auroc"](positive.float(), positive) == 1.0
