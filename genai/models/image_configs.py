"""The image models' configs (:mod:`.gan`, :mod:`.vae`), torch-free: they are also the job
spec's ``model:`` sections (the family adds its tag), and reading a spec must not import
torch (the CLI and the gateway read specs)."""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field

from genai.models import ImageSize
from genai.specbase import Section


class GANConfig(Section):
    """The two nets' shape; with ``family: gan`` it is the job spec's ``model:`` section."""

    image_size: ImageSize = 8
    channels: Literal[1, 3] = 1
    latent_dim: int = Field(64, ge=2, le=4096)
    g_width: int = Field(
        64, ge=4, le=4096, description="the generator's last hidden channels; doubled per stage"
    )
    d_width: int = Field(64, ge=4, le=4096)
    conditional: bool = Field(False, description="class-conditional (needs labelled data)")
    num_classes: int = Field(10, ge=2, le=100_000)

    @property
    def stages(self) -> int:
        return int(math.log2(self.image_size // 4))

    def to_dict(self) -> dict[str, Any]:
        """The config alone (no family tag), as ``meta.json`` records it for serving."""
        return self.model_dump(include=set(GANConfig.model_fields))


class VAEConfig(Section):
    """The VAE's shape; with ``family: vae`` it is the job spec's ``model:`` section."""

    image_size: ImageSize = 8
    channels: Literal[1, 3] = 1
    latent_dim: int = Field(16, ge=1, le=4096)
    width: int = Field(32, ge=4, le=4096)
    likelihood: Literal["gaussian", "bernoulli"] = "gaussian"

    @property
    def stages(self) -> int:
        return int(math.log2(self.image_size // 4))

    def to_dict(self) -> dict[str, Any]:
        """The config alone (no family tag), as ``meta.json`` records it for serving."""
        return self.model_dump(include=set(VAEConfig.model_fields))
