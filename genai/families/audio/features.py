"""Log-mel spectrograms in torch: the quality classifier's input and the checkpoints'
pictures. A clip becomes a one-channel image in [0, 1] (mels x frames)."""

from __future__ import annotations

import math
from functools import cache

import torch

N_MELS = 40
TOP_DB = 80.0  # the dynamic range shown: 0 = 80 dB below full scale, 1 = full scale


def _hz_to_mel(f: torch.Tensor) -> torch.Tensor:
    return 2595.0 * torch.log10(1.0 + f / 700.0)


@cache
def mel_filters(sample_rate: int, n_fft: int, n_mels: int) -> torch.Tensor:
    """Triangular HTK mel filters, (n_mels, n_fft // 2 + 1)."""
    freqs = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    top = _hz_to_mel(torch.tensor(sample_rate / 2.0))
    mels = torch.linspace(0, float(top), n_mels + 2)
    hz = 700.0 * (10 ** (mels / 2595.0) - 1.0)
    lower, centre, upper = hz[:-2, None], hz[1:-1, None], hz[2:, None]
    up = (freqs[None] - lower) / (centre - lower)
    down = (upper - freqs[None]) / (upper - centre)
    return torch.clamp(torch.minimum(up, down), min=0.0)


def n_fft_for(sample_rate: int) -> int:
    """About 32 ms windows (512 at 16 kHz)."""
    return 2 ** round(math.log2(sample_rate * 0.032))


def log_mel(clips: torch.Tensor, sample_rate: int, n_mels: int = N_MELS) -> torch.Tensor:
    """(N, samples) or (N, 1, samples) in [-1, 1] -> (N, 1, n_mels, frames) in [0, 1]."""
    x = clips.float().reshape(len(clips), -1)
    n_fft = n_fft_for(sample_rate)
    spec = torch.stft(
        x,
        n_fft,
        hop_length=n_fft // 2,
        window=torch.hann_window(n_fft),
        return_complex=True,
    ).abs()
    mel = mel_filters(sample_rate, n_fft, n_mels) @ (spec**2)
    db = 10 * torch.log10(mel.clamp(min=1e-10)) - 10 * math.log10((n_fft / 4) ** 2)
    return ((db + TOP_DB) / TOP_DB).clamp(0, 1)[:, None]
