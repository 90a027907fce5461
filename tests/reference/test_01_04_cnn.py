"""01.04 · Convolutional networks: the notebook's from-scratch pieces against PyTorch.

The notebook's definitions are imported without running it (utils.notebooks.notebook_definitions).
"""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from utils.notebooks import notebook_definitions

NOTEBOOK = Path(__file__).resolve().parents[2] / "01_deep_learning" / "04_convolutional_networks.ipynb"


@pytest.fixture(scope="module")
def nb():
    return notebook_definitions(NOTEBOOK, solutions=True)


def test_affine_warp_whole_pixel_shift_is_roll_and_quarter_turn_is_rot90(nb):
    """Moved from the notebook (issue 18 item 18): bilinear sampling at pixel centres is exact."""
    torch.manual_seed(0)
    images = F.pad(torch.rand(4, 1, 20, 20), (4, 4, 4, 4))  # (4, 1, 28, 28), empty 4-pixel border
    no_turn, no_shift = torch.zeros(4), torch.zeros(4, 2)
    moved = nb["affine_warp"](images, no_turn, torch.tensor([[2.0, -1.0]] * 4))  # 2 right, 1 up
    torch.testing.assert_close(moved, torch.roll(images, shifts=(-1, 2), dims=(2, 3)), atol=1e-5, rtol=0)
    turned = nb["affine_warp"](images, torch.full((4,), math.pi / 2), no_shift)
    torch.testing.assert_close(turned, torch.rot90(images, 1, dims=(2, 3)), atol=1e-5, rtol=0)


@pytest.mark.parametrize("s", [1, 2, 3])
def test_stamping_equals_conv_transpose2d(nb, s):
    torch.manual_seed(s)
    y, w = torch.randn(4, 7, dtype=torch.float64), torch.randn(5, 5, dtype=torch.float64)
    theirs = F.conv_transpose2d(y[None, None], w[None, None], stride=s)[0, 0]
    torch.testing.assert_close(nb["conv_transpose2d_stamps"](y, w, s), theirs, rtol=0, atol=1e-12)


def test_conv_transpose_out_size_matches_torch_on_random_settings(nb):
    rng = np.random.default_rng(0)
    for _ in range(200):
        n, k, s = (int(v) for v in rng.integers(1, 9, size=3))
        p, op = int(rng.integers(0, k)), int(rng.integers(0, s))
        if nb["conv_transpose_out_size"](n, k, p, s, op) < 1:
            continue
        layer = torch.nn.ConvTranspose2d(1, 1, k, stride=s, padding=p, output_padding=op)
        assert layer(torch.zeros(1, 1, n, n)).shape[-1] == nb["conv_transpose_out_size"](n, k, p, s, op)


def test_residual_block_keeps_shape_and_skip_false_drops_the_identity(nb):
    torch.manual_seed(0)
    block = nb["ResidualBlock"](6).eval()
    x = torch.randn(2, 6, 9, 9)
    assert block(x).shape == x.shape
    torch.testing.assert_close(block(x), F.relu(x + block.body(x)))
    block.skip = False
    torch.testing.assert_close(block(x), F.relu(block.body(x)))
