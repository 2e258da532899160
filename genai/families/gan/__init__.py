"""The GAN family: a DCGAN generator and discriminator, two DeepSpeed engines."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from genai.families.base import Family
from genai.families.images import (
    GENERATIONS,
    SERVE_SECTION,
    ImageDataSpec,
    check_image_job,
)
from genai.families.images.schemas import ImageCard, ImageLog
from genai.models.image_configs import GANConfig
from genai.specbase import Section


class GANModelSpec(GANConfig):
    """DCGAN-style generator + discriminator (genai/models/gan.py declares the fields)."""

    family: Literal["gan"]


class GANSpec(Section):
    """Adversarial training: two engines with their own optimizers."""

    loss: Literal["non_saturating", "hinge"] = "non_saturating"
    d_steps: int = Field(1, ge=1, le=100, description="discriminator steps per generator step")
    g_lr: float = Field(2e-4, gt=0.0, le=1.0)
    d_lr: float = Field(2e-4, gt=0.0, le=1.0)
    beta1: float = Field(0.5, ge=0.0, lt=1.0)
    beta2: float = Field(0.999, ge=0.0, lt=1.0)
    eval_samples: int = Field(1000, ge=10, description="generated images per quality evaluation")


FAMILY = Family(
    name="gan",
    model_spec=GANModelSpec,
    data_spec=ImageDataSpec,
    section=GANSpec,
    objective=("fd", "min"),
    metrics=(
        "fd",
        "classes_covered",
        "class_entropy",
        "cond_accuracy",
        "d_loss",
        "g_loss",
        "images_per_s",
    ),
    lr_keys=("gan.g_lr", "gan.d_lr"),
    prepare="genai.families.images.data:prepare",
    task="genai.families.gan.task:GANTask",
    server="genai.families.images.serving:server",
    check=check_image_job,
    routes=(GENERATIONS,),
    card_fields=ImageCard,
    log_fields=ImageLog,
    serve_section=SERVE_SECTION,
)
