"""The video models' shapes, torch-free (reading a job spec must not import torch)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from genai.specbase import Section


class VideoVAEConfig(Section):
    """A conditional 3-D convolutional VAE on clips of ``frames`` x ``size`` x ``size``
    grey frames: strided 3-D convolutions down to 4 x 4 x 4 (time x height x width), a
    Gaussian latent, and transposed ones back up; the condition (how many of each digit
    a clip shows) joins the encoder's output and the latent."""

    frames: Literal[16] = 16
    size: Literal[32, 64] = 32
    latent_dim: int = Field(64, ge=1, le=4096)
    width: int = Field(
        16, ge=4, le=1024, description="the first stage's channels, doubled per stage"
    )
    num_classes: int = Field(10, ge=2, le=1000)

    @property
    def space_stages(self) -> int:
        """Height and width halve per stage down to 4 (time halves in the last two)."""
        return {32: 3, 64: 4}[self.size]

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(include=set(VideoVAEConfig.model_fields))
