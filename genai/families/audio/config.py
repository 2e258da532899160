"""The audio GAN's shape, torch-free: with ``family: audio`` it is the job spec's ``model:``
section, and reading a spec must not import torch (the CLI and the gateway read specs)."""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from genai.specbase import Section


class AudioGANConfig(Section):
    """One of the two GANs of WaveGAN's paper (Donahue et al., ICLR 2019), conditional.

    - ``specgan`` (the default): a DCGAN on log-mel spectrograms (``mels`` bands x ``mels``
      frames), turned into sound by Griffin-Lim; it learns intelligible digits in minutes
      on a CPU.
    - ``wavegan``: 1-D transposed convolutions of stride 4 from a 16-step seed up to
      ``clip_samples`` raw samples; the discriminator mirrors it, with phase shuffle
      between its layers. It needs far longer runs than SpecGAN to be intelligible.
    """

    arch: Literal["specgan", "wavegan"] = Field(
        "specgan", description="specgan: log-mel images + Griffin-Lim; wavegan: raw samples"
    )
    sample_rate: int = Field(16000, ge=1000, le=48000, description="samples per second")
    clip_samples: int = Field(
        16384, description="samples per clip: 16 x 4^k (16384: WaveGAN's ~1 s at 16 kHz)"
    )
    latent_dim: int = Field(100, ge=2, le=4096)
    width: int = Field(
        16,
        ge=2,
        le=1024,
        description="the nets' last (G) and first (D) stage's channels, doubled per stage "
        "(WaveGAN's d)",
    )
    mels: Literal[16, 32, 64] = Field(
        64, description="specgan: mel bands, and frames per clip (a square image)"
    )
    griffin_lim_iters: int = Field(
        32, ge=1, le=1000, description="specgan: Griffin-Lim iterations from mels to samples"
    )
    kernel: int = Field(25, ge=3, le=101, description="convolution length (odd)")
    phase_shuffle: int = Field(
        2, ge=0, le=16, description="the discriminator's random shift per layer (samples)"
    )
    conditional: bool = Field(True, description="one class (digit) per clip")
    num_classes: int = Field(10, ge=2, le=10_000)

    @field_validator("clip_samples")
    @classmethod
    def _power_of_four(cls, v: int) -> int:
        k = math.log(v / 16, 4) if v >= 64 else 0
        if v < 64 or abs(k - round(k)) > 1e-9:
            raise ValueError(f"must be 16 x 4^k with k >= 1 (1024, 4096, 16384, ...), got {v}")
        return v

    @field_validator("kernel")
    @classmethod
    def _odd(cls, v: int) -> int:
        if v % 2 == 0:
            raise ValueError(f"must be odd, got {v}")
        return v

    @model_validator(mode="after")
    def _frames(self) -> AudioGANConfig:
        if self.arch == "specgan" and self.clip_samples // self.mels < 16:
            raise ValueError(
                f"clip_samples ({self.clip_samples}) is too short for {self.mels} frames of "
                "at least 16 samples each: lower mels"
            )
        return self

    @property
    def hop(self) -> int:
        """specgan: samples per frame (the STFT's window is two frames)."""
        return self.clip_samples // self.mels

    @property
    def stages(self) -> int:
        return round(math.log(self.clip_samples / 16, 4))

    @property
    def seconds(self) -> float:
        return self.clip_samples / self.sample_rate

    def to_dict(self) -> dict[str, Any]:
        """The config alone (no family tag), as ``meta.json`` records it for serving."""
        return self.model_dump(include=set(AudioGANConfig.model_fields))
