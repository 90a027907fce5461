"""01.03 · Training deep networks: the notebook's BatchNorm and LayerNorm against PyTorch's modules.

The notebook's definitions are imported without running it (utils.notebooks.notebook_definitions).
"""

from pathlib import Path

import pytest
import torch
import torch.nn as nn

from utils.notebooks import notebook_definitions

NOTEBOOK = Path(__file__).resolve().parents[2] / "01_deep_learning" / "03_training_deep_networks.ipynb"


@pytest.fixture(scope="module")
def nb():
    return notebook_definitions(NOTEBOOK, solutions=True)


@pytest.mark.parametrize("shape, torch_class", [((1, 3), nn.BatchNorm1d), ((1, 3, 1, 1), nn.BatchNorm2d)])
def test_batchnorm_refuses_one_value_per_channel_like_torch(nb, shape, torch_class):
    """Issue 18, item 7: the old code returned zeros and set running_var to NaN; torch raises a ValueError."""
    ours, theirs = nb["BatchNorm"](3).train(), torch_class(3).train()
    x = torch.randn(*shape)
    with pytest.raises(ValueError) as theirs_error:
        theirs(x)
    with pytest.raises(ValueError) as ours_error:
        ours(x)
    assert str(ours_error.value) == str(theirs_error.value)
    assert torch.equal(ours.running_var, torch.ones(3)) and torch.equal(ours.running_mean, torch.zeros(3))


def test_batchnorm_accepts_one_image_with_several_positions_and_eval_mode(nb):
    """One image of 2 × 2 positions has 4 values per channel (torch accepts it); eval mode needs no batch at all."""
    torch.manual_seed(0)
    ours, theirs = nb["BatchNorm"](3).double(), nn.BatchNorm2d(3).double()
    x = torch.randn(1, 3, 2, 2, dtype=torch.float64)
    torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=1e-10)
    torch.testing.assert_close(ours.running_var, theirs.running_var, rtol=0, atol=1e-12)
    ours.eval(), theirs.eval()
    x1 = torch.randn(1, 3, dtype=torch.float64)[..., None, None]
    torch.testing.assert_close(ours(x1), theirs(x1), rtol=0, atol=1e-10)


@pytest.mark.parametrize("shape", [(16, 5), (4, 5, 3, 3)])
def test_batchnorm_train_step_equals_torch(nb, shape):
    torch.manual_seed(1)
    ours = nb["BatchNorm"](5).double()
    theirs = (nn.BatchNorm1d if len(shape) == 2 else nn.BatchNorm2d)(5).double()
    for _ in range(3):
        x = 3 * torch.randn(*shape, dtype=torch.float64) + 1
        torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=1e-10)
    torch.testing.assert_close(ours.running_mean, theirs.running_mean, rtol=0, atol=1e-12)
    torch.testing.assert_close(ours.running_var, theirs.running_var, rtol=0, atol=1e-12)


def test_layernorm_equals_torch(nb):
    torch.manual_seed(2)
    ours, theirs = nb["LayerNorm"](7).double(), nn.LayerNorm(7).double()
    x = torch.randn(2, 4, 7, dtype=torch.float64) * 5 - 2
    torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=1e-10)
