"""04.02 · Image-to-image translation: the notebook's from-scratch pieces against PyTorch and hand-made nets.

The notebook's definitions are imported without running it (utils.notebooks.notebook_definitions).
"""

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from utils.notebooks import notebook_definitions

NOTEBOOK = Path(__file__).resolve().parents[2] / "04_images_multimodal" / "02_image_to_image_translation.ipynb"


@pytest.fixture(scope="module")
def nb():
    return notebook_definitions(NOTEBOOK, solutions=True)


# --- the U-Net --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("in_ch", "out_ch", "nf", "depth", "size"), [(1, 3, 4, 5, 32), (3, 3, 8, 3, 16), (2, 1, 4, 6, 64)])
def test_unet_keeps_the_size_and_the_tanh_range(nb, in_ch, out_ch, nf, depth, size):
    torch.manual_seed(0)
    net = nb["UNet"](in_ch, out_ch, nf, depth)
    out = net(torch.randn(2, in_ch, size, size) * 5)
    assert out.shape == (2, out_ch, size, size)
    assert out.abs().max() <= 1


def test_unet_encoder_halves_to_the_bottleneck_and_widths_cap_at_8nf(nb):
    net = nb["UNet"](1, 3, nf=4, depth=6)
    x, sides, widths = torch.randn(2, 1, 64, 64), [], []
    for down in net.down:
        x = down(x)
        sides.append(x.shape[-1])
        widths.append(x.shape[1])
    assert sides == [32, 16, 8, 4, 2, 1]
    assert widths == [4, 8, 16, 32, 32, 32]


def test_unet_skips_concatenate_encoder_features(nb):
    # With skips, every decoder layer but the first takes twice the channels; without, it takes them once.
    with_skips, without = nb["UNet"](1, 3, 4, 4, skips=True), nb["UNet"](1, 3, 4, 4, skips=False)
    in_with = [up[1].in_channels for up in with_skips.up]
    in_without = [up[1].in_channels for up in without.up]
    assert in_without == [32, 16, 8, 4]
    assert in_with == [32, 32, 16, 8]
    assert without(torch.randn(2, 1, 16, 16)).shape == (2, 3, 16, 16)


def test_unet_skips_carry_the_input_past_the_bottleneck(nb):
    # Zero the bottleneck's output: with skips the input still reaches the output; without, it cannot.
    torch.manual_seed(0)
    for skips, expect_dependence in ((True, True), (False, False)):
        net = nb["UNet"](1, 1, 4, 3, skips=skips).eval()
        net.down[-1].register_forward_hook(lambda module, args, out: torch.zeros_like(out))
        a, b = torch.randn(1, 1, 8, 8), torch.randn(1, 1, 8, 8)
        assert (not torch.allclose(net(a), net(b))) == expect_dependence


# --- the PatchGAN and its receptive field ------------------------------------------------------------

def test_classic_patchgan_has_a_70_pixel_receptive_field_and_a_30x30_grid(nb):
    net = nb["patch_discriminator"](6, 8, 3)
    assert nb["receptive_field"](*nb["conv_geometry"](net)) == 70
    assert nb["empirical_receptive_field"](net, 6, 256) == (70, 70)
    assert net(torch.zeros(1, 6, 256, 256)).shape == (1, 1, 30, 30)


@pytest.mark.parametrize("n_layers", [1, 2, 3, 4])
def test_receptive_field_recurrence_equals_the_gradient_measurement(nb, n_layers):
    net = nb["patch_discriminator"](3, 4, n_layers)
    r = nb["receptive_field"](*nb["conv_geometry"](net))
    assert r == {1: 16, 2: 34, 3: 70, 4: 142}[n_layers]
    assert nb["empirical_receptive_field"](net, 3, 320) == (r, r)


@pytest.mark.parametrize(("kernels", "strides", "expected"),
                         [([3, 3, 3], [1, 1, 1], 7), ([2, 2, 2], [2, 2, 2], 8), ([7, 3], [2, 1], 11), ([5], [4], 5)])
def test_receptive_field_by_hand(nb, kernels, strides, expected):
    assert nb["receptive_field"](kernels, strides) == expected


def test_empirical_receptive_field_of_a_hand_built_stack(nb):
    net = nn.Sequential(nn.Conv2d(1, 2, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(2, 1, 5, stride=1, padding=2))
    torch.manual_seed(0)
    nn.init.uniform_(net[0].weight, 0.1, 1.0)  # positive weights, bias >0: the ReLU never blocks a pixel
    nn.init.constant_(net[0].bias, 10.0)
    assert nb["empirical_receptive_field"](net, 1, 40) == (11, 11)
    assert nb["receptive_field"](*nb["conv_geometry"](net)) == 11


def test_patchgan_grid_matches_the_convolution_formula(nb):
    for n, n_layers in [(32, 1), (64, 2), (100, 3), (57, 2)]:
        side = n
        for s in [2] * n_layers + [1, 1]:
            side = (side + 2 - 4) // s + 1
        assert nb["patch_discriminator"](3, 4, n_layers)(torch.zeros(1, 3, n, n)).shape[-1] == side
        assert nb["patch_grid_size"](n, n_layers) == side


# --- the losses ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("scale", [0.1, 3.0, 80.0])
@pytest.mark.parametrize("target", [0.0, 1.0])
def test_bce_with_logits_equals_torch(nb, scale, target):
    torch.manual_seed(1)
    logits = torch.randn(3, 1, 5, 7, dtype=torch.float64) * scale
    expected = F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))
    torch.testing.assert_close(nb["bce_with_logits"](logits, target), expected, rtol=1e-12, atol=1e-12)


def test_pix2pix_losses_equal_torch_modules(nb):
    torch.manual_seed(2)
    d_real, d_fake = torch.randn(4, 1, 6, 6), torch.randn(4, 1, 6, 6)
    fake, target = torch.rand(4, 3, 16, 16) * 2 - 1, torch.rand(4, 3, 16, 16) * 2 - 1
    bce = nn.BCEWithLogitsLoss()
    expected_d = 0.5 * (bce(d_real, torch.ones_like(d_real)) + bce(d_fake, torch.zeros_like(d_fake)))
    expected_g = bce(d_fake, torch.ones_like(d_fake)) + 37.0 * nn.L1Loss()(fake, target)
    torch.testing.assert_close(nb["pix2pix_d_loss"](d_real, d_fake), expected_d)
    torch.testing.assert_close(nb["pix2pix_g_loss"](d_fake, fake, target, 37.0), expected_g)


def test_lsgan_loss_equals_mse(nb):
    pred = torch.randn(3, 1, 4, 4)
    torch.testing.assert_close(nb["lsgan_loss"](pred, True), F.mse_loss(pred, torch.ones_like(pred)))
    torch.testing.assert_close(nb["lsgan_loss"](pred, False), F.mse_loss(pred, torch.zeros_like(pred)))


def test_cycle_and_identity_losses_follow_their_definitions(nb):
    torch.manual_seed(3)
    g_net, f_net = nn.Conv2d(3, 3, 3, padding=1), nn.Conv2d(3, 3, 1)
    a, b = torch.randn(2, 3, 8, 8), torch.randn(5, 3, 8, 8)  # unpaired: even the batch sizes differ
    expected_cyc = F.l1_loss(f_net(g_net(a)), a) + F.l1_loss(g_net(f_net(b)), b)
    expected_id = F.l1_loss(g_net(b), b) + F.l1_loss(f_net(a), a)
    torch.testing.assert_close(nb["cycle_loss"](g_net, f_net, a, b), expected_cyc)
    torch.testing.assert_close(nb["identity_loss"](g_net, f_net, a, b), expected_id)
    # the arguments' roles matter: swapping G and F changes the cycle loss of non-inverse maps
    assert not torch.allclose(nb["cycle_loss"](f_net, g_net, a, b), expected_cyc)


def test_an_invertible_wrong_map_has_zero_cycle_loss(nb):
    x = torch.rand(6, 3, 8, 8)
    g_wrong = lambda a: nb["true_map"](a).flip(-1)  # noqa: E731
    f_wrong = lambda b: b.flip(-1)[:, [2, 0, 1]]  # noqa: E731
    assert nb["cycle_loss"](g_wrong, f_wrong, x, nb["true_map"](x)).item() == 0.0
    assert (g_wrong(x) - nb["true_map"](x)).abs().mean() > 0.1


# --- data and metrics ----------------------------------------------------------------------------------

def test_edge_map_is_canny_and_to_tensor_maps_to_minus_one_one(nb):
    from skimage import feature

    square = np.zeros((1, 20, 20, 3))
    square[0, 5:15, 5:15] = 1.0
    edges = nb["edge_map"](square)
    assert edges.shape == (1, 20, 20) and set(np.unique(edges)) == {0.0, 1.0}
    np.testing.assert_array_equal(edges[0], feature.canny(square[0, ..., 0], sigma=1.0))
    t = nb["to_tensor"](square)
    assert t.shape == (1, 3, 20, 20) and t.min() == -1 and t.max() == 1


def test_sharpness_is_zero_for_flat_images_and_grows_with_contrast(nb):
    flat = torch.full((2, 3, 8, 8), 0.3)
    stripes = torch.zeros(2, 3, 8, 8)
    stripes[..., ::2] = 1.0  # vertical stripes: |dx| = 1, dy = 0 everywhere
    assert nb["sharpness"](flat) == 0.0
    assert nb["sharpness"](stripes) == pytest.approx(1.0)
    assert nb["sharpness"](stripes * 0.5) == pytest.approx(0.5)
