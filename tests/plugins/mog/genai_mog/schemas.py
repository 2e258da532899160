"""The mixture family's HTTP bodies, model-card fields and generation-log fields."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class SamplesRequest(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")

    model: str | None = Field(None, max_length=128)
    n: int = Field(16, ge=1, le=1 << 20, description="points to draw (the serve spec caps it)")
    seed: int | None = Field(None, ge=0, le=2**63 - 1)


class SamplesResponse(BaseModel):
    id: str
    object: Literal["mog.samples"] = "mog.samples"
    created: int
    model: str
    data: list[tuple[float, float]]


class MoGCard(BaseModel):
    components: int


class MoGLog(BaseModel):
    n_points: int | None = None
