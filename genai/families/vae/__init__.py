"""The VAE family: a convolutional VAE trained on the ELBO."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from genai.families.base import Family
from genai.families.images import (
    GENERATIONS,
    INTERPOLATE,
    RECONSTRUCT,
    SERVE_SECTION,
    ImageDataSpec,
    check_image_job,
)
from genai.families.images.schemas import ImageCard, ImageLog
from genai.models.image_configs import VAEConfig
from genai.specbase import Section


class VAEModelSpec(VAEConfig):
    """Convolutional VAE (genai/models/vae.py declares the fields)."""

    family: Literal["vae"]


class VAESpec(Section):
    kl_warmup_steps: int = Field(0, ge=0, description="KL weight ramps 0 -> 1 over these steps")
    iw_samples: int = Field(64, ge=1, description="k of the importance-weighted bound")
    eval_images: int = Field(
        256, ge=1, description="held-out images for the importance-weighted bound"
    )


FAMILY = Family(
    name="vae",
    model_spec=VAEModelSpec,
    data_spec=ImageDataSpec,
    section=VAESpec,
    objective=("val_neg_elbo", "min"),
    metrics=(
        "val_neg_elbo",
        "val_recon",
        "val_kl",
        "val_iw*_bound",
        "neg_elbo",
        "recon",
        "kl",
        "images_per_s",
    ),
    lr_keys=("train.lr",),
    prepare="genai.families.vae.data:prepare",
    task="genai.families.vae.task:VAETask",
    server="genai.families.images.serving:server",
    check=check_image_job,
    routes=(GENERATIONS, RECONSTRUCT, INTERPOLATE),
    card_fields=ImageCard,
    log_fields=ImageLog,
    serve_section=SERVE_SECTION,
)
