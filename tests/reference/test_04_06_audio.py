"""04.06's from-scratch audio code against the libraries and against utils.audio, on random inputs:
stft == torch.stft, mel_filterbank == transformers' mel_filter_bank, µ-law == torchaudio's formula (and
utils.audio), the WaveNet is causal with the stated receptive field, Griffin–Lim's error never rises,
Karplus–Strong plays its predicted pitch, and the exercise solutions == transformers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from transformers.audio_utils import mel_filter_bank, power_to_db, spectrogram, window_function

from utils import audio as A
from utils.notebooks import notebook_definitions

NOTEBOOK = Path(__file__).resolve().parents[2] / "04_images_multimodal" / "06_audio_generation.ipynb"
ns = notebook_definitions(NOTEBOOK, solutions=True)


@pytest.mark.parametrize("n_fft,hop,length", [(64, 16, 1000), (400, 160, 16000), (63, 7, 500), (1024, 256, 4097)])
def test_stft_matches_torch_stft(n_fft: int, hop: int, length: int) -> None:
    x = torch.randn(3, length, generator=torch.Generator().manual_seed(length), dtype=torch.float64)
    ref = torch.stft(x, n_fft, hop, window=torch.hann_window(n_fft, dtype=torch.float64), center=True,
                     pad_mode="reflect", return_complex=True)
    torch.testing.assert_close(ns["stft"](x, n_fft, hop), ref)
    torch.testing.assert_close(ns["stft"](x[0], n_fft, hop), ref[0])
    torch.testing.assert_close(A.stft(x, n_fft, hop), ref)


@pytest.mark.parametrize("n_fft,n_mels,f_min,f_max,sr", [(512, 40, 0, 8000, 16000), (1024, 80, 0, 11025, 22050),
                                                          (400, 64, 125, 7600, 16000), (256, 10, 30, 2000, 4000)])
def test_mel_filterbank_matches_transformers(n_fft: int, n_mels: int, f_min: float, f_max: float, sr: int) -> None:
    ref = mel_filter_bank(n_fft // 2 + 1, n_mels, f_min, f_max, sr, norm=None, mel_scale="htk")
    np.testing.assert_allclose(ns["mel_filterbank"](n_fft // 2 + 1, n_mels, f_min, f_max, sr), ref, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(ns["mel_to_hz"](ns["hz_to_mel"](np.array([0.0, 440.0, 8000.0]))), [0, 440, 8000], atol=1e-9)


def _torchaudio_mu_law_encoding(x: torch.Tensor, quantization_channels: int = 256) -> torch.Tensor:
    """torchaudio.functional.mu_law_encoding (torchaudio 2.x), copied: torchaudio is not installable here."""
    mu = torch.tensor(quantization_channels - 1.0, dtype=x.dtype)
    x_mu = torch.sign(x) * torch.log1p(mu * torch.abs(x)) / torch.log1p(mu)
    return ((x_mu + 1) / 2 * mu + 0.5).to(torch.int64)


def _torchaudio_mu_law_decoding(x_mu: torch.Tensor, quantization_channels: int = 256) -> torch.Tensor:
    """torchaudio.functional.mu_law_decoding (torchaudio 2.x), copied."""
    mu = torch.tensor(quantization_channels - 1.0, dtype=torch.float64)
    x = (x_mu.double() / mu) * 2 - 1.0
    return torch.sign(x) * (torch.exp(torch.abs(x) * torch.log1p(mu)) - 1.0) / mu


@pytest.mark.parametrize("seed", range(3))
def test_mu_law_matches_torchaudio_and_utils(seed: int) -> None:
    x = torch.rand(5000, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 2 - 1
    q = ns["mu_law_encode"](x)
    torch.testing.assert_close(q, _torchaudio_mu_law_encoding(x))
    torch.testing.assert_close(q, A.mu_law_encode(x))
    torch.testing.assert_close(ns["mu_law_decode"](q).double(), _torchaudio_mu_law_decoding(q), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("channels,n_layers", [(8, 3), (16, 5)])
def test_wavenet_is_causal_with_its_receptive_field(channels: int, n_layers: int) -> None:
    torch.manual_seed(n_layers)
    model = ns["WaveNet"](channels, n_layers, 3).eval()
    rf = model.receptive_field
    assert rf == 2 ** n_layers
    idx = torch.randint(0, 256, (2, 4 * rf))
    changed = idx.clone()
    changed[:, 2 * rf] = (changed[:, 2 * rf] + 77) % 256
    c = torch.tensor([0, 2])
    with torch.no_grad():
        logits, loss = model(idx, c)
        moved = (logits - model(changed, c)[0]).abs().amax(dim=1) > 0            # (B, T)
        assert loss is None and logits.shape == (2, 256, 4 * rf)
        _, loss = model(idx[:, :-1], c, idx[:, 1:])
    assert not moved[:, :2 * rf].any() and moved[:, 2 * rf:3 * rf].all() and not moved[:, 3 * rf:].any()
    assert abs(loss.item() - np.log(256)) < 1.0            # an untrained model is near uniform


def test_karplus_strong_plays_its_predicted_pitch() -> None:
    rng = np.random.default_rng(0)
    for sr, freq in [(16000, 220.0), (8000, 330.0), (4000, 440.0)]:
        x = ns["karplus_strong"](freq, 0.5, sr, rng)
        predicted = sr / (ns["ks_period"](freq, sr) + 0.5)
        assert abs(ns["peak_frequency"](x, sr, 100) - predicted) < 0.01 * predicted


def test_aliasing_and_peak_frequency() -> None:
    assert abs(ns["peak_frequency"](ns["tone"](3000.0, 0.5, 4000), 4000) - 1000) < 5
    assert abs(ns["peak_frequency"](ns["tone"](3000.0, 0.5, 16000), 16000) - 3000) < 5


def test_griffin_lim_error_never_rises_and_recovers_a_tone() -> None:
    x = torch.as_tensor(ns["tone"](440.0, 0.5, 16000, (1.0, 0.5)))
    mag = A.stft(x, ns["N_FFT"], ns["HOP"]).abs()
    y, history = ns["griffin_lim"](mag, 20)
    assert all(b <= a + 1e-6 for a, b in zip(history, history[1:])) and history[-1] < 0.5 * history[0]
    assert y.shape == (ns["HOP"] * (mag.shape[-1] - 1),)


@pytest.mark.parametrize("seed", range(4))
def test_exercise_solutions_match_transformers(seed: int) -> None:
    rng = np.random.default_rng(seed)
    S = rng.random((30, 20)) ** 8 * 10.0 ** int(rng.integers(-3, 3))
    np.testing.assert_allclose(ns["power_to_db"](S, 60.0), power_to_db(S, 1.0, 1e-10, 60.0), rtol=1e-6, atol=1e-6)
    x = rng.standard_normal(3000)
    fb = mel_filter_bank(257, 40, 0.0, 8000.0, 16000, norm=None, mel_scale="htk")
    ref = spectrogram(x, window_function(512, "hann"), 512, 128, power=2.0, mel_filters=fb, dtype=np.float64)
    np.testing.assert_allclose(ns["mel_spectrogram"](x, 512, 128, 40, 16000), ref, rtol=1e-6, atol=1e-9)
