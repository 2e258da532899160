"""What the image families (GAN, VAE) share: the ``data:`` section for images."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from genai.families.images.schemas import (
    ImageGenerationRequest,
    ImagesResponse,
    InterpolateRequest,
    ReconstructRequest,
)
from genai.serve.api import Route
from genai.specbase import PathField, Section


class ImageDataSpec(Section):
    """Images. ``source: digits`` is scikit-learn's bundled 8x8 digits (offline, labelled)."""

    kind: Literal["images"] = "images"
    source: str = PathField(
        "digits", description="'digits', an image folder, or a Parquet file", keywords=("digits",)
    )
    image_column: str = Field("image", description="Parquet column of encoded image bytes")
    label_column: str | None = Field(None, description="Parquet column of integer labels")
    labels_from_dirs: bool = Field(True, description="image folder: class = sub-directory name")
    val_fraction: float = Field(0.2, gt=0.0, lt=0.5)
    max_images: int = Field(200_000, ge=10)
    cache_dir: str = PathField(
        ".genai_cache",
        description="the quality classifier is cached here (and copied into checkpoints)",
    )
    seed: int = Field(0, ge=0)


def check_image_job(spec) -> None:
    if spec.train.grad_accum_steps != 1:
        raise ValueError(f"train.grad_accum_steps must be 1 for model.family {spec.model.family!r}")


class ImageBatchSpec(Section):
    """``@serve.batch`` for image generation requests."""

    max_batch_size: int = Field(16, ge=1, le=1024)
    batch_wait_timeout_s: float = Field(0.01, ge=0.0, le=10.0)


SERVE_SECTION = ("images", ImageBatchSpec)  # shared by the GAN and the VAE


def _route(path: str, request: type, name: str) -> Route:
    return Route(
        path=path,
        request=request,
        response=ImagesResponse,
        id_prefix="img",
        gateway=f"genai.families.images.routes:{name}",
        replica=f"genai.families.images.replica:{name}",
    )


GENERATIONS = _route("/v1/images/generations", ImageGenerationRequest, "generations")
RECONSTRUCT = _route("/v1/vae/reconstruct", ReconstructRequest, "reconstruct")
INTERPOLATE = _route("/v1/vae/interpolate", InterpolateRequest, "interpolate")
