"""Tests for utils.image_metrics: the Fréchet distance and KID against independent formulas, and the digit CNN."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from utils.image_metrics import (
    DigitClassifier,
    digit_classifier,
    digits_as_images,
    frechet_distance,
    kernel_inception_distance,
)


def gaussian(n, d, seed, shift=0.0, scale=1.0):
    rng = np.random.default_rng(seed)
    return shift + scale * rng.standard_normal((n, d)) @ rng.standard_normal((d, d)) / np.sqrt(d)


# --- Fréchet distance ------------------------------------------------------------------------------

def test_frechet_one_dimension_is_the_closed_form():
    # 1-D Gaussians: FD = (μa − μb)² + (σa − σb)², with the unbiased (N − 1) variance.
    rng = np.random.default_rng(0)
    a, b = rng.normal(1.0, 2.0, (500, 1)), rng.normal(-0.5, 0.5, (400, 1))
    expected = (a.mean() - b.mean()) ** 2 + (a.std(ddof=1) - b.std(ddof=1)) ** 2
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)


def test_frechet_equals_eigenvalue_formula():
    # Tr((ΣaΣb)^½) = Σ √λ_i(ΣaΣb): the eigenvalues of a product of two PSD matrices are real and ≥ 0.
    a, b = gaussian(300, 6, 1), gaussian(250, 6, 2, shift=0.3, scale=1.5)
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root_trace = np.sqrt(np.clip(np.linalg.eigvals(sa @ sb).real, 0, None)).sum()
    expected = ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(sa) + np.trace(sb) - 2 * root_trace
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-8)


def test_frechet_zero_for_identical_sets_symmetric_and_accepts_tensors():
    a, b = gaussian(200, 5, 3), gaussian(200, 5, 4, shift=1.0)
    assert abs(frechet_distance(a, a)) < 1e-8
    assert frechet_distance(a, b) == pytest.approx(frechet_distance(b, a), rel=1e-8)
    assert frechet_distance(torch.tensor(a), torch.tensor(b)) == pytest.approx(frechet_distance(a, b))
    # a pure shift by c in every one of D dimensions costs exactly D·c²
    assert frechet_distance(a, a + 0.5) == pytest.approx(5 * 0.25, rel=1e-6)


def test_frechet_survives_singular_covariances():
    # N < D: each covariance is singular; the result must stay finite and real.
    a, b = gaussian(10, 32, 5), gaussian(10, 32, 6, shift=0.2)
    value = frechet_distance(a, b)
    assert np.isfinite(value) and value > 0


@pytest.mark.parametrize("a, b", [
    (np.zeros((10,)), np.zeros((10, 2))),  # 1-D
    (np.zeros((1, 3)), np.zeros((5, 3))),  # one sample
    (np.zeros((5, 3)), np.zeros((5, 4))),  # different D
    (np.full((5, 3), np.nan), np.zeros((5, 3))),  # not finite
])
def test_frechet_rejects_bad_features(a, b):
    with pytest.raises(ValueError):
        frechet_distance(a, b)


# --- KID ------------------------------------------------------------------------------------------

def mmd2_unbiased_loops(x, y):
    """The unbiased MMD² of Gretton et al. written with explicit sums over pairs (slow, obvious)."""
    m, d = len(x), x.shape[1]
    k = lambda u, v: (u @ v / d + 1) ** 3  # noqa: E731
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return xx + yy - 2 * xy


def test_kid_one_full_subset_equals_the_pairwise_sums():
    # One subset of all samples is a permutation of them, and MMD² does not depend on the order.
    a, b = gaussian(30, 4, 7), gaussian(30, 4, 8, shift=0.5)
    kid = kernel_inception_distance(a, b, subsets=1, subset_size=30, seed=0)
    assert kid == pytest.approx(mmd2_unbiased_loops(a, b), rel=1e-9)


def test_kid_is_unbiased_where_frechet_is_not():
    # Two samples of ONE distribution: KID averages to ~0 at small N; FD stays clearly positive.
    kids, fds = [], []
    for seed in range(20):
        rng = np.random.default_rng(seed)
        a, b = rng.standard_normal((50, 8)), rng.standard_normal((50, 8))
        kids.append(kernel_inception_distance(a, b, subsets=1, subset_size=50, seed=seed))
        fds.append(frechet_distance(a, b))
    assert abs(np.mean(kids)) < 3 * np.std(kids) / np.sqrt(len(kids))  # mean within noise of 0
    assert min(kids) < 0  # an unbiased estimate of 0 must sometimes be negative
    assert min(fds) > 0.5  # FD's small-N bias: every run far from the true 0


def test_kid_grows_with_a_shift_and_repeats_with_its_seed():
    rng = np.random.default_rng(9)
    a, b = rng.standard_normal((300, 6)), rng.standard_normal((300, 6))  # one distribution
    near = kernel_inception_distance(a, b, subsets=5, subset_size=100, seed=1)
    far = kernel_inception_distance(a, b + 1.0, subsets=5, subset_size=100, seed=1)
    assert far > 10 * abs(near)
    assert near == kernel_inception_distance(a, b, subsets=5, subset_size=100, seed=1)


@pytest.mark.parametrize("kwargs", [dict(subsets=0), dict(subset_size=1), dict(subset_size=51),
                                    dict(subsets=2.5)])
def test_kid_rejects_bad_subsets(kwargs):
    a, b = np.zeros((60, 3)), np.ones((50, 3))
    with pytest.raises(ValueError):
        kernel_inception_distance(a, b, **kwargs)


# --- the digit classifier ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def classifier() -> DigitClassifier:
    return digit_classifier("smoke")


def test_digits_as_images_range_and_shapes():
    images, labels = digits_as_images()
    assert images.shape == (1797, 1, 8, 8) and labels.shape == (1797,)
    assert images.min() == -1.0 and images.max() == 1.0
    assert digits_as_images(10)[0].shape == (10, 1, 8, 8)


def test_classifier_is_accurate_on_held_out_digits(classifier):
    images, labels = digits_as_images()
    held_out = classifier.predict(images[1500:])
    assert (held_out == labels[1500:].numpy()).mean() == pytest.approx(classifier.test_accuracy)
    assert classifier.test_accuracy > 0.85
    assert classifier.features(images[:7]).shape == (7, 64)


def test_classifier_features_separate_real_from_noise(classifier):
    images, _ = digits_as_images()
    noise = torch.rand(800, 1, 8, 8) * 2 - 1
    real_a, real_b = classifier.features(images[:800]), classifier.features(images[800:1600])
    assert frechet_distance(real_a, real_b) * 5 < frechet_distance(real_a, classifier.features(noise))


def test_classifier_accepts_larger_and_3d_images(classifier):
    images, labels = digits_as_images(64)
    big = torch.nn.functional.interpolate(images, size=(32, 32), mode="nearest")  # 8×8 blown up 4×
    assert (classifier.predict(big) == classifier.predict(images)).all()  # area-averaged back exactly
    assert (classifier.predict(images[:, 0].numpy()) == classifier.predict(images)).all()
    with pytest.raises(ValueError):
        classifier.predict(torch.zeros(4, 3, 8, 8))


def test_classifier_is_cached_and_leaves_the_callers_rng_alone(classifier):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    assert digit_classifier("smoke") is classifier  # cached: not trained again
    digit_classifier("smoke", seed=1)  # a new training run
    assert torch.equal(torch.rand(3), expected)


def test_importing_the_module_imports_no_torch_or_scipy():
    import subprocess
    import sys

    code = "import sys, utils.image_metrics; print('torch' in sys.modules, 'scipy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
