"""utils.audio against the libraries: stft == torch.stft, istft == torch.istft, mel_filterbank ==
transformers' mel_filter_bank (htk/slaney scales, slaney norm), µ-law == torchaudio's formula and ≈ G.711."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from transformers.audio_utils import hertz_to_mel, mel_filter_bank, mel_to_hertz

from utils import audio as A

SHAPES = [(64, 16), (256, 64), (100, 30), (63, 7), (512, 128)]


@pytest.mark.parametrize("n_fft,hop", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_stft_matches_torch(n_fft: int, hop: int, dtype: torch.dtype) -> None:
    x = torch.randn(2, 3, 1500, generator=torch.Generator().manual_seed(n_fft), dtype=dtype)
    window = torch.hann_window(n_fft, dtype=dtype)
    ref = torch.stft(x.reshape(-1, 1500), n_fft, hop, window=window, center=True, pad_mode="reflect",
                     return_complex=True).reshape(2, 3, n_fft // 2 + 1, -1)
    torch.testing.assert_close(A.stft(x, n_fft, hop), ref)
    torch.testing.assert_close(A.stft(x[0, 0], n_fft, hop), ref[0, 0])        # a bare 1-D signal too


@pytest.mark.parametrize("n_fft,hop", SHAPES)
def test_istft_matches_torch_and_inverts(n_fft: int, hop: int) -> None:
    x = torch.randn(4, 1500, generator=torch.Generator().manual_seed(hop), dtype=torch.float64)
    spec = A.stft(x, n_fft, hop)
    ref = torch.istft(spec, n_fft, hop, window=torch.hann_window(n_fft, dtype=torch.float64), length=1500)
    torch.testing.assert_close(A.istft(spec, n_fft, hop, 1500), ref)
    torch.testing.assert_close(A.istft(spec, n_fft, hop, 1500), x)             # perfect reconstruction


def test_stft_and_istft_reject_bad_arguments() -> None:
    x = torch.randn(100)
    with pytest.raises(ValueError, match="n_fft"):
        A.stft(x, 0, 4)
    with pytest.raises(ValueError, match="window"):
        A.stft(x, 16, 4, window=torch.ones(8))
    with pytest.raises(ValueError, match="more than"):
        A.stft(x, 512, 4)
    with pytest.raises(ValueError, match="frequency rows"):
        A.istft(A.stft(x, 16, 4), 32, 4, 100)


@pytest.mark.parametrize("scale", ["htk", "slaney"])
def test_mel_scale_matches_transformers(scale: str) -> None:
    f = np.array([0.0, 20.0, 440.0, 999.0, 1000.0, 1001.0, 4000.0, 11025.0])
    np.testing.assert_allclose(A.hz_to_mel(f, scale), hertz_to_mel(f.copy(), mel_scale=scale), rtol=1e-12)
    m = A.hz_to_mel(f, scale)
    np.testing.assert_allclose(A.mel_to_hz(m, scale), mel_to_hertz(m.copy(), mel_scale=scale), rtol=1e-12)
    np.testing.assert_allclose(A.mel_to_hz(m, scale), f, rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("scale", ["htk", "slaney"])
@pytest.mark.parametrize("norm", [None, "slaney"])
@pytest.mark.parametrize("n_fft,n_mels,f_min,f_max,sr", [(512, 40, 0.0, 8000.0, 16000), (1024, 80, 0.0, 8000.0, 22050),
                                                          (256, 20, 50.0, 3000.0, 8000), (400, 64, 125.0, 7600.0, 16000)])
def test_mel_filterbank_matches_transformers(scale: str, norm: str | None, n_fft: int, n_mels: int, f_min: float,
                                             f_max: float, sr: int) -> None:
    ref = mel_filter_bank(n_fft // 2 + 1, n_mels, f_min, f_max, sr, norm=norm, mel_scale=scale)
    got = A.mel_filterbank(n_fft // 2 + 1, n_mels, f_min, f_max, sr, scale=scale, norm=norm)
    assert got.shape == (n_fft // 2 + 1, n_mels)
    np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-12)


def test_mel_filterbank_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="f_max"):
        A.mel_filterbank(257, 40, 0, 9000, 16000)
    with pytest.raises(ValueError, match="norm"):
        A.mel_filterbank(257, 40, 0, 8000, 16000, norm="area")
    with pytest.raises(ValueError, match="scale"):
        A.hz_to_mel(440.0, "kaldi-ish")


def _torchaudio_mu_law_encoding(x: torch.Tensor, quantization_channels: int) -> torch.Tensor:
    """torchaudio.functional.mu_law_encoding (torchaudio 2.x), copied verbatim: torchaudio is not installable here."""
    mu = torch.tensor(quantization_channels - 1.0, dtype=x.dtype)
    x_mu = torch.sign(x) * torch.log1p(mu * torch.abs(x)) / torch.log1p(mu)
    return ((x_mu + 1) / 2 * mu + 0.5).to(torch.int64)


def _torchaudio_mu_law_decoding(x_mu: torch.Tensor, quantization_channels: int) -> torch.Tensor:
    """torchaudio.functional.mu_law_decoding (torchaudio 2.x), copied verbatim."""
    mu = quantization_channels - 1.0
    mu = torch.tensor(mu, dtype=torch.float64)
    x = (x_mu.double() / mu) * 2 - 1.0
    return torch.sign(x) * (torch.exp(torch.abs(x) * torch.log1p(mu)) - 1.0) / mu


@pytest.mark.parametrize("mu", [255, 15, 1023])
def test_mu_law_matches_torchaudio_formula(mu: int) -> None:
    x = torch.rand(5000, generator=torch.Generator().manual_seed(mu), dtype=torch.float64) * 2 - 1
    x = torch.cat([x, torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64)])
    q = A.mu_law_encode(x, mu)
    assert q.dtype == torch.int64 and int(q.min()) == 0 and int(q.max()) == mu
    torch.testing.assert_close(q, _torchaudio_mu_law_encoding(x, mu + 1))
    torch.testing.assert_close(A.mu_law_decode(q, mu).double(), _torchaudio_mu_law_decoding(q, mu + 1), rtol=1e-6, atol=1e-7)


def test_mu_law_round_trip_error_grows_with_amplitude() -> None:
    """Companding spends its levels on quiet sounds: the error is ~relative, not absolute."""
    x = torch.linspace(-1, 1, 20001, dtype=torch.float64)
    err = (A.mu_law_decode(A.mu_law_encode(x)).double() - x).abs()
    quiet, loud = err[x.abs() < 0.01].max(), err[x.abs() > 0.9].max()
    # linear 8-bit rounding (step 2/255) errs by up to 1/255 ≈ 0.0039 at every amplitude
    assert quiet < 1e-3 and 1 / 255 < loud < 0.025
    assert float((err / x.abs())[x.abs() > 0.01].max()) < 0.03    # above 1 % of full scale: relative error < 3 %


def test_mu_law_is_close_to_g711() -> None:
    """G.711 µ-law (audioop, Python <= 3.12) is a piecewise-linear 8-bit version of the same curve."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        audioop = pytest.importorskip("audioop")
    x = np.linspace(-1, 1, 4001)
    pcm = np.round(x * 32767).astype("<i2")
    g711 = np.frombuffer(audioop.ulaw2lin(audioop.lin2ulaw(pcm.tobytes(), 2), 2), "<i2") / 32768
    ours = A.mu_law_decode(A.mu_law_encode(torch.tensor(pcm / 32767.0))).numpy()
    # our local quantisation step: dx/dy * 2/mu, with dx/dy = (1 + mu|x|) ln(1 + mu) / mu
    step = (1 + 255 * np.abs(x)) * math.log1p(255) / 255 * 2 / 255
    assert np.all(np.abs(g711 - ours) <= 2 * step + 2e-4)     # within two of our local quantisation steps


def test_mu_law_rejects_bad_mu() -> None:
    with pytest.raises(ValueError, match="mu"):
        A.mu_law_encode(torch.zeros(3), 0)
