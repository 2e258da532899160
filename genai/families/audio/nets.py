"""The audio GAN's two nets by ``model.arch``, and the map between clips and what they
read and write: raw samples for WaveGAN, log-mel images for SpecGAN."""

from __future__ import annotations

import torch
from torch import nn

from genai.families.audio import specgan, wavegan
from genai.families.audio.config import AudioGANConfig


def build(cfg: AudioGANConfig) -> tuple[nn.Module, nn.Module]:
    """(generator, discriminator); both generators have ``latents(n, generator, labels)``."""
    if cfg.arch == "specgan":
        return specgan.nets(cfg)
    return wavegan.Generator(cfg), wavegan.Discriminator(cfg)


class ClipCodec:
    """Clips (N, samples) in [-1, 1] <-> the nets' tensors."""

    def __init__(self, cfg: AudioGANConfig) -> None:
        self.mel = specgan.MelCodec(cfg) if cfg.arch == "specgan" else None

    def encode(self, clips: torch.Tensor) -> torch.Tensor:
        return clips[:, None] if self.mel is None else self.mel.encode(clips)

    def decode(self, out: torch.Tensor) -> torch.Tensor:
        return out[:, 0].float() if self.mel is None else self.mel.decode(out)
