"""Evaluating image generators: the Fréchet distance, KID, and a small digit classifier for features.

Introduced in 04_images_multimodal/01_gan_variants.ipynb, where both distances are built from scratch first.
The standard protocol (FID, KID) embeds images with Inception-v3's 2,048-d pool features; offline this
course embeds 8×8 digits with `digit_classifier()`, a small CNN trained here in a few seconds. Numbers
from different feature extractors, sample counts or image sizes are NOT comparable with each other.
Nothing happens at import time; torch and scipy are imported inside the functions that need them.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from utils.runtime import resolve_preset

CLASSIFIER_STEPS = {"smoke": 300, "laptop": 600, "full": 600}
"""Training steps (batch 64) of `digit_classifier` per preset; 300 steps take ~3 s on 2 cores."""

IMAGE_SIZE = 8  # the classifier's input: (N, 1, 8, 8) grey images in [-1, 1]


def _as_features(feats: Any, name: str) -> np.ndarray:
    """`feats` as a float64 array (N, D) with N ≥ 2, or a ValueError saying what was given."""
    x = np.asarray(feats.detach().cpu() if hasattr(feats, "detach") else feats, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"{name} must be a 2-D array (N, D) of features with N ≥ 2; got shape {x.shape}.")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} holds NaN or infinite values; features must be finite.")
    return x


def _check_same_dim(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feats_a has D={a.shape[1]} and feats_b has D={b.shape[1]}; "
                         "both must come from the same feature extractor.")


def frechet_distance(feats_a: Any, feats_b: Any) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets: ‖μa−μb‖² + Tr(Σa + Σb − 2(ΣaΣb)^½)."""
    from scipy import linalg

    a, b = _as_features(feats_a, "feats_a"), _as_features(feats_b, "feats_b")
    _check_same_dim(a, b)
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)  # (D,)
    # (D, D), unbiased (N − 1); atleast_2d because np.cov of one feature is a 0-d array
    sigma_a, sigma_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    covmean = linalg.sqrtm(sigma_a @ sigma_b)  # may come back complex with tiny imaginary parts
    if not np.isfinite(covmean).all():
        # A singular product (N ≤ D, or dead features): nudge both diagonals, as pytorch-fid does.
        offset = np.eye(a.shape[1]) * 1e-6
        covmean = linalg.sqrtm((sigma_a + offset) @ (sigma_b + offset))
    covmean = np.real(covmean)  # the imaginary part is rounding noise for PSD inputs
    diff = mu_a - mu_b
    return float(diff @ diff + np.trace(sigma_a) + np.trace(sigma_b) - 2.0 * np.trace(covmean))


def _polynomial_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD² with the cubic kernel k(x, y) = (x·y / D + 1)³ (Binkowski et al. 2018)."""
    m, d = len(x), x.shape[1]
    k_xx = (x @ x.T / d + 1.0) ** 3  # (m, m)
    k_yy = (y @ y.T / d + 1.0) ** 3  # (m, m)
    k_xy = (x @ y.T / d + 1.0) ** 3  # (m, m)
    # Unbiased: leave out the diagonals k(x_i, x_i), which always match themselves.
    sum_xx = (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
    sum_yy = (k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(sum_xx + sum_yy - 2.0 * k_xy.mean())


def kernel_inception_distance(feats_a: Any, feats_b: Any, *, subsets: int = 10, subset_size: int = 100,
                              seed: int = 0) -> float:
    """KID: the unbiased MMD² (cubic kernel) averaged over `subsets` random subsets of `subset_size` each."""
    a, b = _as_features(feats_a, "feats_a"), _as_features(feats_b, "feats_b")
    _check_same_dim(a, b)
    if isinstance(subsets, bool) or not isinstance(subsets, int) or subsets < 1:
        raise ValueError(f"subsets must be a positive integer; got {subsets!r}.")
    largest = min(len(a), len(b))
    if isinstance(subset_size, bool) or not isinstance(subset_size, int) or not 2 <= subset_size <= largest:
        raise ValueError(f"subset_size must be an integer in [2, {largest}] (the smaller feature set); "
                         f"got {subset_size!r}.")
    rng = np.random.default_rng(seed)
    scores = [_polynomial_mmd2(a[rng.choice(len(a), subset_size, replace=False)],
                               b[rng.choice(len(b), subset_size, replace=False)]) for _ in range(subsets)]
    return float(np.mean(scores))


def digits_as_images(n: int | None = None) -> tuple["torch.Tensor", "torch.Tensor"]:  # noqa: F821
    """sklearn's real 8×8 digits as (images (N, 1, 8, 8) float32 in [-1, 1], labels (N,) int64)."""
    import torch

    from utils.data import load

    bunch = load("digits")
    images = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0 * 2.0 - 1.0  # 0..16 -> [-1, 1]
    labels = torch.tensor(bunch.target, dtype=torch.int64)
    return (images, labels) if n is None else (images[:n], labels[:n])


class DigitClassifier:
    """A trained small CNN on 8×8 digits: `.features(images)` (N, 64), `.predict(images)` (N,), `.test_accuracy`."""

    def __init__(self, net: Any, test_accuracy: float, steps: int) -> None:
        self.net = net.eval()
        self.test_accuracy = test_accuracy  # on the held-out last 297 digits
        self.steps = steps

    def _prepare(self, images: Any) -> "torch.Tensor":  # noqa: F821
        import torch
        import torch.nn.functional as F

        x = torch.as_tensor(np.asarray(images) if not hasattr(images, "detach") else images.detach())
        x = x.float().cpu()
        if x.ndim == 3:
            x = x.unsqueeze(1)  # (N, H, W) -> (N, 1, H, W)
        if x.ndim != 4 or x.shape[1] != 1 or len(x) == 0:
            raise ValueError(f"images must be grey (N, 1, H, W) or (N, H, W) with N ≥ 1; got {tuple(x.shape)}.")
        if x.shape[-2:] != (IMAGE_SIZE, IMAGE_SIZE):
            # Larger digits (MNIST 28×28) are averaged down to 8×8, as sklearn's digits were made.
            x = F.interpolate(x, size=(IMAGE_SIZE, IMAGE_SIZE), mode="area")
        return x

    def features(self, images: Any, batch_size: int = 512) -> np.ndarray:
        """Penultimate-layer features (N, 64) of images in [-1, 1]: the stand-in for Inception's pool features."""
        import torch

        x = self._prepare(images)
        with torch.no_grad():
            out = [self.net.features(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]
        return torch.cat(out).numpy().astype(np.float64)

    def predict(self, images: Any, batch_size: int = 512) -> np.ndarray:
        """Predicted digit (N,) for images in [-1, 1]."""
        import torch

        x = self._prepare(images)
        with torch.no_grad():
            out = [self.net(x[i:i + batch_size]).argmax(dim=1) for i in range(0, len(x), batch_size)]
        return torch.cat(out).numpy()


def _build_net() -> Any:
    import torch.nn as nn

    class DigitCNN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),  # (N, 16, 8, 8)
                nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),  # (N, 32, 8, 8)
                nn.MaxPool2d(2),  # (N, 32, 4, 4)
                # (N, 64): the features, taken BEFORE the ReLU so that no unit is dead (a dead unit is a
                # zero row/column in the covariance and makes the Fréchet distance's matrix root singular)
                nn.Flatten(), nn.Linear(32 * 4 * 4, 64),
            )
            self.head = nn.Sequential(nn.ReLU(), nn.Linear(64, 10))  # (N, 10) logits

        def forward(self, x):  # noqa: ANN001, ANN202
            return self.head(self.features(x))

    return DigitCNN()


@functools.lru_cache(maxsize=4)
def _trained_classifier(steps: int, seed: int) -> DigitClassifier:
    import torch
    import torch.nn.functional as F

    images, labels = digits_as_images()
    n_train = 1500  # the last 297 digits are held out to measure accuracy
    generator = torch.Generator().manual_seed(seed)
    torch_state = torch.random.get_rng_state()
    torch.manual_seed(seed)  # the weights' initialisation; the caller's RNG is restored below
    net = _build_net()
    torch.random.set_rng_state(torch_state)
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    net.train()
    for _ in range(steps):
        idx = torch.randint(0, n_train, (64,), generator=generator)
        loss = F.cross_entropy(net(images[idx]), labels[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    net.eval()
    with torch.no_grad():
        accuracy = (net(images[n_train:]).argmax(1) == labels[n_train:]).float().mean().item()
    return DigitClassifier(net, accuracy, steps)


def digit_classifier(preset: str | None = None, *, seed: int = 0) -> DigitClassifier:
    """A small CNN trained on sklearn's 8×8 digits (scaled to [-1, 1]); trained once per process and cached."""
    name = resolve_preset(preset)
    return _trained_classifier(CLASSIFIER_STEPS[name], seed)
