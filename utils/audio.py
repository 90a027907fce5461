"""Audio from scratch: the STFT and its inverse, the mel scale and filterbank, µ-law companding.

Introduced in 04_images_multimodal/06_audio_generation.ipynb, where each piece is derived and checked
against the library: `stft` == `torch.stft` and `istft` == `torch.istft` (center=True, reflect padding,
one-sided), `mel_filterbank` == `transformers.audio_utils.mel_filter_bank` (htk or slaney scale, with or
without slaney area normalisation), and `mu_law_encode` / `mu_law_decode` follow the WaveNet paper
(== torchaudio's `mu_law_encoding` / `mu_law_decoding`, which is not installable here). tests/test_audio.py
and tests/reference/test_04_06_audio.py check them.
"""

from __future__ import annotations

import math

import numpy as np

MEL_SCALES = ("htk", "slaney")


def _check_positive(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer; got {value!r}.")


def stft(x: "torch.Tensor", n_fft: int, hop_length: int, window: "torch.Tensor | None" = None) -> "torch.Tensor":  # noqa: F821
    """Short-time Fourier transform of (..., N) signals -> complex (..., n_fft // 2 + 1, frames); == torch.stft."""
    import torch

    _check_positive("n_fft", n_fft)
    _check_positive("hop_length", hop_length)
    if x.shape[-1] <= n_fft // 2:
        raise ValueError(f"the signal needs more than n_fft // 2 = {n_fft // 2} samples; got {x.shape[-1]}.")
    window = torch.hann_window(n_fft, dtype=x.dtype) if window is None else window
    if window.shape != (n_fft,):
        raise ValueError(f"window must have shape ({n_fft},); got {tuple(window.shape)}.")
    lead = x.shape[:-1]
    x = x.reshape(-1, 1, x.shape[-1])                                        # (B, 1, N): pad wants a channel dim
    # center=True: reflect-pad n_fft/2 on both sides, so frame t is centred on sample t * hop_length.
    x = torch.nn.functional.pad(x, (n_fft // 2, n_fft // 2), mode="reflect")[:, 0]
    frames = x.unfold(-1, n_fft, hop_length)                                 # (B, frames, n_fft)
    spec = torch.fft.rfft(frames * window, dim=-1)                           # (B, frames, n_fft // 2 + 1)
    return spec.transpose(-1, -2).reshape(*lead, n_fft // 2 + 1, -1)


def istft(spec: "torch.Tensor", n_fft: int, hop_length: int, length: int,  # noqa: F821
          window: "torch.Tensor | None" = None) -> "torch.Tensor":  # noqa: F821
    """Inverse of `stft` by weighted overlap-add: complex (..., F, frames) -> (..., length); == torch.istft."""
    import torch

    _check_positive("n_fft", n_fft)
    _check_positive("hop_length", hop_length)
    if spec.shape[-2] != n_fft // 2 + 1:
        raise ValueError(f"spec must have n_fft // 2 + 1 = {n_fft // 2 + 1} frequency rows; got {spec.shape[-2]}.")
    window = torch.hann_window(n_fft, dtype=spec.real.dtype) if window is None else window
    lead, n_frames = spec.shape[:-2], spec.shape[-1]
    frames = torch.fft.irfft(spec.reshape(-1, *spec.shape[-2:]).transpose(-1, -2), n=n_fft) * window  # (B, T, n_fft)
    total = n_fft + hop_length * (n_frames - 1)
    # Overlap-add the windowed frames, and the squared window the same way: dividing by it undoes the
    # analysis and synthesis windows (least-squares inverse, Griffin & Lim 1984).
    index = (torch.arange(n_frames)[:, None] * hop_length + torch.arange(n_fft)).reshape(-1)   # (T * n_fft,)
    batch = frames.shape[0]
    signal = torch.zeros(batch, total, dtype=frames.dtype).index_add_(1, index, frames.reshape(batch, -1))
    norm = torch.zeros(total, dtype=frames.dtype).index_add_(0, index, (window ** 2).repeat(n_frames))
    start = n_fft // 2                                                       # drop the centre padding
    signal, norm = signal[:, start:start + length], norm[start:start + length]
    if length > total - start or bool((norm < 1e-11).any()):
        raise ValueError(f"length {length} is longer than these {n_frames} frames can rebuild (or the window has gaps).")
    return (signal / norm).reshape(*lead, length)


def hz_to_mel(freq: "float | np.ndarray", scale: str = "htk") -> "float | np.ndarray":
    """Hertz -> mels: htk 2595 log10(1 + f/700); slaney linear below 1 kHz (3 f / 200), logarithmic above."""
    if scale not in MEL_SCALES:
        raise ValueError(f"scale must be one of {MEL_SCALES}; got {scale!r}.")
    freq = np.asarray(freq, dtype=np.float64)
    if scale == "htk":
        return 2595.0 * np.log10(1.0 + freq / 700.0)
    log_step = 27.0 / np.log(6.4)                                            # 27 mels per factor 6.4 above 1 kHz
    return np.where(freq >= 1000.0, 15.0 + np.log(np.maximum(freq, 1e-12) / 1000.0) * log_step, 3.0 * freq / 200.0)


def mel_to_hz(mels: "float | np.ndarray", scale: str = "htk") -> "float | np.ndarray":
    """Mels -> hertz, the inverse of `hz_to_mel`."""
    if scale not in MEL_SCALES:
        raise ValueError(f"scale must be one of {MEL_SCALES}; got {scale!r}.")
    mels = np.asarray(mels, dtype=np.float64)
    if scale == "htk":
        return 700.0 * (10.0 ** (mels / 2595.0) - 1.0)
    return np.where(mels >= 15.0, 1000.0 * np.exp((mels - 15.0) * np.log(6.4) / 27.0), 200.0 * mels / 3.0)


def mel_filterbank(n_freqs: int, n_mels: int, f_min: float, f_max: float, sample_rate: int, *,
                   scale: str = "htk", norm: str | None = None) -> np.ndarray:
    """Triangular mel filters, (n_freqs, n_mels); == transformers' mel_filter_bank with the same options."""
    _check_positive("n_mels", n_mels)
    if n_freqs < 2 or not 0 <= f_min < f_max <= sample_rate / 2:
        raise ValueError(f"need n_freqs >= 2 and 0 <= f_min < f_max <= sample_rate / 2; got {n_freqs}, "
                         f"{f_min}, {f_max}, {sample_rate}.")
    if norm not in (None, "slaney"):
        raise ValueError(f"norm must be None or 'slaney'; got {norm!r}.")
    # n_mels + 2 edges equally spaced in mels: filter m rises from edge m to edge m+1, falls to edge m+2.
    edges = mel_to_hz(np.linspace(hz_to_mel(f_min, scale), hz_to_mel(f_max, scale), n_mels + 2), scale)
    bins = np.linspace(0.0, sample_rate / 2, n_freqs)[:, None]              # (n_freqs, 1): FFT bin centres
    rising = (bins - edges[None, :-2]) / (edges[1:-1] - edges[:-2])          # (n_freqs, n_mels)
    falling = (edges[None, 2:] - bins) / (edges[2:] - edges[1:-1])
    filters = np.maximum(0.0, np.minimum(rising, falling))
    if norm == "slaney":
        filters *= 2.0 / (edges[2:] - edges[:-2])                            # equal area: wide filters get lower
    return filters


def mu_law_encode(x: "torch.Tensor", mu: int = 255) -> "torch.Tensor":  # noqa: F821
    """x in [-1, 1] -> integer classes 0..mu: F(x) = sign(x) ln(1 + mu|x|) / ln(1 + mu), then uniform bins."""
    import torch

    _check_positive("mu", mu)
    y = torch.sign(x) * torch.log1p(mu * x.abs().clamp(max=1.0)) / math.log1p(mu)   # in [-1, 1]
    return ((y + 1) / 2 * mu + 0.5).long()                                  # round to mu + 1 levels


def mu_law_decode(q: "torch.Tensor", mu: int = 255) -> "torch.Tensor":  # noqa: F821
    """Classes 0..mu -> x in [-1, 1], the inverse of `mu_law_encode`: F^-1(y) = sign(y) ((1 + mu)^|y| - 1) / mu."""
    _check_positive("mu", mu)
    y = q.double() / mu * 2 - 1                                              # class centre back in [-1, 1]
    return (y.sign() * ((1 + mu) ** y.abs() - 1) / mu).float()
