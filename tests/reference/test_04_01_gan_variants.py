"""04.01 · GAN variants: the notebook's from-scratch pieces against PyTorch, SciPy and utils.image_metrics.

The notebook's definitions are imported without running it (utils.notebooks.notebook_definitions).
"""

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from utils.image_metrics import frechet_distance, kernel_inception_distance
from utils.notebooks import notebook_definitions

NOTEBOOK = Path(__file__).resolve().parents[2] / "04_images_multimodal" / "01_gan_variants.ipynb"


@pytest.fixture(scope="module")
def nb():
    return notebook_definitions(NOTEBOOK, solutions=True)


# --- the gradient penalty --------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(7, 5), (4, 1, 6, 6), (3, 2, 4)])
def test_gradient_penalty_equals_per_sample_gradients_from_torch_func(nb, shape):
    # torch.func.vmap(grad(f)) differentiates each sample on its own: no "sum of scores" trick involved.
    torch.manual_seed(0)
    n_in = int(np.prod(shape[1:]))
    critic = nn.Sequential(nn.Flatten(), nn.Linear(n_in, 9), nn.Tanh(), nn.Linear(9, 1)).double()
    real, fake = torch.randn(*shape, dtype=torch.float64), torch.randn(*shape, dtype=torch.float64)
    eps = torch.rand(shape[0], *[1] * (len(shape) - 1), dtype=torch.float64)
    penalty, norms = nb["gradient_penalty"](critic, real, fake, lam=3.0, eps=eps)
    x_hat = eps * real + (1 - eps) * fake
    one = lambda x: critic(x.unsqueeze(0)).squeeze()  # noqa: E731 (a scalar function of one sample)
    grads = torch.func.vmap(torch.func.grad(one))(x_hat)
    expected_norms = grads.flatten(1).norm(dim=1)
    torch.testing.assert_close(norms, expected_norms, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(penalty, 3.0 * ((expected_norms - 1) ** 2).mean(), rtol=1e-12, atol=1e-12)


def test_gradient_penalty_on_known_functions(nb):
    torch.manual_seed(1)
    real, fake = torch.randn(10, 4, dtype=torch.float64), torch.randn(10, 4, dtype=torch.float64)
    eps = torch.rand(10, 1, dtype=torch.float64)
    w = torch.tensor([[0.3, -0.4, 0.0, 1.2]], dtype=torch.float64)
    linear = lambda x: x @ w.T + 2.0  # noqa: E731 (gradient w everywhere)
    penalty, norms = nb["gradient_penalty"](linear, real, fake, lam=10.0, eps=eps)
    torch.testing.assert_close(norms, torch.full((10,), float(w.norm()), dtype=torch.float64))
    torch.testing.assert_close(penalty, 10.0 * (w.norm() - 1) ** 2)
    radial = lambda x: x.norm(dim=1, keepdim=True)  # noqa: E731 (gradient x/‖x‖: norm exactly 1)
    assert nb["gradient_penalty"](radial, real, fake, eps=eps)[0].abs() < 1e-12


def test_gradient_penalty_default_interpolates_lie_between_real_and_fake(nb):
    torch.manual_seed(2)
    seen = []
    critic = lambda x: (seen.append(x.detach()), x.sum(dim=1, keepdim=True))[1]  # noqa: E731
    real, fake = torch.zeros(500, 3), torch.ones(500, 3)
    nb["gradient_penalty"](critic, real, fake)
    (x_hat,) = seen
    assert x_hat.min() >= 0 and x_hat.max() <= 1
    assert torch.equal(x_hat[:, 0], x_hat[:, 2])  # one ε per sample, not per coordinate
    assert 0.4 < x_hat.mean() < 0.6 and x_hat[:, 0].std() > 0.25  # ε ~ U[0, 1]: mean ½, std ≈ 0.29


def test_gradient_penalty_weight_gradient_passes_gradcheck(nb):
    torch.manual_seed(3)
    mlp = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 1)).double()
    names = [name for name, _ in mlp.named_parameters()]
    real, fake = torch.randn(6, 3, dtype=torch.float64), torch.randn(6, 3, dtype=torch.float64)
    eps = torch.rand(6, 1, dtype=torch.float64)

    def penalty(*weights):
        critic = lambda x: torch.func.functional_call(mlp, dict(zip(names, weights)), (x,))  # noqa: E731
        return nb["gradient_penalty"](critic, real, fake, eps=eps)[0]

    assert torch.autograd.gradcheck(penalty, tuple(mlp.parameters()), eps=1e-6, atol=1e-6)


# --- the Fréchet distance and KID ------------------------------------------------------------------

@pytest.mark.parametrize("n, d", [(50, 1), (200, 8), (300, 32), (40, 64)])
def test_frechet_scratch_equals_scipy_sqrtm_version(nb, n, d):
    rng = np.random.default_rng(d)
    a = rng.standard_normal((n, d)) @ rng.standard_normal((d, d))
    b = rng.standard_normal((n + 7, d)) * 0.7 + 0.3
    assert nb["frechet_distance_scratch"](a, b) == pytest.approx(frechet_distance(a, b), rel=1e-6, abs=1e-6)


def test_sqrtm_psd_squares_back(nb):
    rng = np.random.default_rng(4)
    x = torch.tensor(rng.standard_normal((30, 6)))
    a = x.T @ x
    root = nb["sqrtm_psd"](a)
    torch.testing.assert_close(root @ root, a)
    torch.testing.assert_close(root, root.T)


def test_mmd2_unbiased_solution_equals_library_and_loops(nb):
    rng = np.random.default_rng(5)
    a, b = rng.standard_normal((12, 3)), rng.standard_normal((12, 3)) + 0.5
    k = lambda u, v: (u @ v / 3 + 1) ** 3  # noqa: E731
    loops = (sum(k(a[i], a[j]) for i in range(12) for j in range(12) if i != j) / 132
             + sum(k(b[i], b[j]) for i in range(12) for j in range(12) if i != j) / 132
             - 2 * sum(k(a[i], b[j]) for i in range(12) for j in range(12)) / 144)
    assert nb["mmd2_unbiased"](a, b) == pytest.approx(loops, rel=1e-10)
    library = kernel_inception_distance(a, b, subsets=1, subset_size=12, seed=0)
    assert nb["mmd2_unbiased"](a, b) == pytest.approx(library, rel=1e-10)


# --- StyleGAN, ProGAN, StarGAN pieces --------------------------------------------------------------

@pytest.mark.parametrize("shape", [(2, 3, 5, 5), (1, 8, 4, 7)])
def test_adain_equals_instance_norm(nb, shape):
    torch.manual_seed(6)
    x = torch.randn(*shape, dtype=torch.float64) * 4 - 1
    scale, bias = torch.randn(shape[:2], dtype=torch.float64), torch.randn(shape[:2], dtype=torch.float64)
    expected = F.instance_norm(x, eps=1e-5) * scale[:, :, None, None] + bias[:, :, None, None]
    torch.testing.assert_close(nb["adain"](x, scale, bias), expected)


@pytest.mark.parametrize("demodulate", [False, True])
def test_modulated_conv_equals_one_conv_per_sample(nb, demodulate):
    torch.manual_seed(7)
    x, weight = torch.randn(3, 4, 6, 6, dtype=torch.float64), torch.randn(5, 4, 3, 3, dtype=torch.float64)
    s = torch.rand(3, 4, dtype=torch.float64) + 0.5
    out = nb["modulated_conv"](x, weight, s, demodulate)
    for i in range(3):
        w = weight * s[i][None, :, None, None]  # (Cout, Cin, k, k) modulated for sample i
        if demodulate:
            w = w / (w.pow(2).sum(dim=(1, 2, 3), keepdim=True) + 1e-8).sqrt()
        torch.testing.assert_close(out[i:i + 1], F.conv2d(x[i:i + 1], w, padding=1))


def test_fade_in_blends_linearly(nb):
    torch.manual_seed(8)
    low, high = torch.randn(2, 1, 3, 3), torch.randn(2, 1, 6, 6)
    up = F.interpolate(low, scale_factor=2, mode="nearest")
    torch.testing.assert_close(nb["fade_in"](low, high, 0.3), 0.7 * up + 0.3 * high)


def test_minibatch_std_solution_against_a_loop(nb):
    torch.manual_seed(9)
    x = torch.randn(5, 2, 3, 3, dtype=torch.float64)
    out = nb["minibatch_std"](x)
    stds = [np.sqrt(np.mean((x[:, c, i, j].numpy() - x[:, c, i, j].numpy().mean()) ** 2) + 1e-8)
            for c in range(2) for i in range(3) for j in range(3)]
    torch.testing.assert_close(out[:, :2], x)
    torch.testing.assert_close(out[:, 2], torch.full((5, 3, 3), float(np.mean(stds)), dtype=torch.float64))


def test_stargan_cycle_term_and_conditioning(nb):
    torch.manual_seed(10)
    x = torch.rand(4, 1, 8, 8) * 2 - 1
    c_org, c_trg = F.one_hot(torch.tensor([0, 1, 0, 1]), 2).float(), F.one_hot(torch.tensor([1, 0, 1, 0]), 2).float()
    G, D = nb["StarGenerator"](), nb["StarDiscriminator"]()
    assert G(x, c_trg).shape == x.shape
    assert not torch.allclose(G(x, c_trg), G(x, c_org))  # the target domain changes the output
    identity = lambda x, c: x  # noqa: E731
    assert nb["stargan_generator_loss"](identity, D, x, c_org, c_trg)["rec"] == 0
    losses = nb["stargan_generator_loss"](G, D, x, c_org, c_trg, lambda_cls=2.0, lambda_rec=5.0)
    torch.testing.assert_close(losses["total"], losses["adv"] + 2.0 * losses["cls"] + 5.0 * losses["rec"])


def test_conditional_gan_uses_the_label(nb):
    torch.manual_seed(11)
    G, D = nb["CondGenerator"](8, 64, 32), nb["CondDiscriminator"](64, 32)
    z = torch.randn(3, 8)
    x_a, x_b = G(z, torch.tensor([0, 1, 2])), G(z, torch.tensor([3, 4, 5]))
    assert x_a.shape == (3, 64) and x_a.abs().max() <= 1 and not torch.allclose(x_a, x_b)
    assert D(x_a, torch.tensor([0, 1, 2])).shape == (3, 1)


def test_an_unfinished_minibatch_std_fails_its_self_check_with_the_hint():
    # The student release stubs the solution as `raise NotImplementedError(hint)`: the self-check must turn
    # that into a CheckFailed carrying the hint, not a raw traceback.
    from utils.checks import CheckFailed, check_close, check_equal
    from utils.notebooks import cell_tags, read_notebook
    from utils.student import stub_solution

    cells = read_notebook(NOTEBOOK).cells
    i = next(i for i, c in enumerate(cells) if "solution" in cell_tags(c) and "def minibatch_std(" in c.source)
    namespace = {"CheckFailed": CheckFailed, "check_close": check_close, "check_equal": check_equal, "torch": torch}
    exec(stub_solution(cells[i].source, "minibatch_std"), namespace)
    with pytest.raises(CheckFailed, match="minibatch_std is not written yet") as failure:
        exec(cells[i + 1].source, namespace)
    assert "per-position standard deviations" in str(failure.value)
