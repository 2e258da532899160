"""SpecGAN (Donahue et al., ICLR 2019): a GAN on log-mel spectrograms, heard through
Griffin-Lim. The nets are the image GAN's DCGAN (:mod:`genai.models.gan`) on one-channel
``mels`` x ``mels`` images; this module is the codec between clips and those images."""

from __future__ import annotations

import math

import torch
from torch import nn

from genai.families.audio.config import AudioGANConfig
from genai.families.audio.features import mel_filters
from genai.models.gan import Discriminator, Generator
from genai.models.image_configs import GANConfig

TOP_DB = 80.0  # the image spans -80..0 dB below full scale as -1..1
MOMENTUM = 0.99  # fast Griffin-Lim (Perraudin et al. 2013)


def image_config(cfg: AudioGANConfig) -> GANConfig:
    return GANConfig(
        image_size=cfg.mels,
        channels=1,
        latent_dim=cfg.latent_dim,
        g_width=cfg.width,
        d_width=cfg.width,
        conditional=cfg.conditional,
        num_classes=cfg.num_classes,
    )


def nets(cfg: AudioGANConfig) -> tuple[nn.Module, nn.Module]:
    img = image_config(cfg)
    return Generator(img), Discriminator(img)


class MelCodec:
    """Clips <-> log-mel images: ``mels`` bands x ``mels`` frames of ``hop`` samples, an
    STFT window of two frames (50% overlap), dB in [-80, 0] as [-1, 1]."""

    def __init__(self, cfg: AudioGANConfig) -> None:
        self.cfg = cfg
        self.hop, self.n_fft = cfg.hop, 2 * cfg.hop
        self.window = torch.hann_window(self.n_fft)
        self.filters = mel_filters(cfg.sample_rate, self.n_fft, cfg.mels)
        # least squares from mel bands back to the STFT's bins, clamped at zero below
        self.inverse = torch.linalg.pinv(self.filters)
        self.reference_db = 20 * math.log10(self.n_fft / 4)  # a full-scale sine's peak bin

    def _stft(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stft(x, self.n_fft, self.hop, window=self.window, return_complex=True)

    def _istft(self, s: torch.Tensor) -> torch.Tensor:
        return torch.istft(
            s, self.n_fft, self.hop, window=self.window, length=self.cfg.clip_samples
        )

    def encode(self, clips: torch.Tensor) -> torch.Tensor:
        """(N, samples) in [-1, 1] -> (N, 1, mels, mels) in [-1, 1]."""
        mag = self._stft(clips.float()).abs()[..., : self.cfg.mels]  # the last frame is padding
        db = 20 * torch.log10((self.filters @ mag).clamp(min=1e-5)) - self.reference_db
        return (db / (TOP_DB / 2) + 1).clamp(-1, 1)[:, None]

    def decode(self, images: torch.Tensor, iters: int | None = None) -> torch.Tensor:
        """(N, 1, mels, mels) in [-1, 1] -> (N, samples) in [-1, 1]: mel bands to STFT
        magnitudes, then fast Griffin-Lim from zero phase (the same images, the same clip)."""
        db = (images[:, 0].float() - 1) * (TOP_DB / 2)
        mel = 10 ** ((db + self.reference_db) / 20)
        mag = torch.nn.functional.pad((self.inverse @ mel).clamp(min=0), (0, 1))
        angles = torch.ones_like(mag, dtype=torch.complex64)
        previous = torch.zeros_like(angles)
        for _ in range(iters or self.cfg.griffin_lim_iters):
            rebuilt = self._stft(self._istft(mag * angles))
            step = rebuilt - previous * (MOMENTUM / (1 + MOMENTUM))
            angles = step / (step.abs() + 1e-16)
            previous = rebuilt
        return self._istft(mag * angles).clamp(-1, 1)
