"""Request and response bodies of the image routes (OpenAI's images shape, and the VAE's own).

Strict, like every route: ``"5"`` is not an integer. Unknown fields are ignored.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

# An image is a base64-encoded PNG/JPEG; 200 kB of base64 is far beyond a 64x64 image.
B64Image = Annotated[str, Field(min_length=4, max_length=200_000)]


class ImageGenerationRequest(BaseModel):
    """OpenAI's images shape. Clients always send ``prompt``: unconditional models ignore it;
    class-conditional ones read the class from it (``"7"`` or a class name)."""

    model_config = ConfigDict(strict=True, extra="ignore")

    model: str | None = Field(None, max_length=128)
    prompt: str = Field("", max_length=1000)
    n: int = Field(1, ge=1, le=64)
    response_format: Literal["b64_json"] = "b64_json"
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    size: str | None = Field(
        None, max_length=16, description="'SxS'; must match the model if given"
    )


class ReconstructRequest(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")

    model: str | None = Field(None, max_length=128)
    images: list[B64Image] = Field(min_length=1, max_length=64)


class InterpolateRequest(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")

    model: str | None = Field(None, max_length=128)
    image_a: B64Image
    image_b: B64Image
    steps: int = Field(8, ge=2, le=64)


class ImageDatum(BaseModel):
    b64_json: str


class ImagesResponse(BaseModel):
    id: str = Field(description="the generation log's id (for POST /v1/feedback)")
    created: int
    data: list[ImageDatum]


class ImageCard(BaseModel):
    """What an image model's card adds."""

    image_size: int
    channels: int
    conditional: bool
    class_names: list[str]


class ImageLog(BaseModel):
    """What an image request adds to its generation-log record: each PNG's digest."""

    image_sha256: list[str] | None = None
