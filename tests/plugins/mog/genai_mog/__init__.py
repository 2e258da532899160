"""A family from outside genai: a learned Gaussian mixture fitted to points on the plane.

Everything a family provides is here: its job-spec sections (``model:``, ``data:``), its
serve-spec section (``mog:``), its route (``POST /v1/mog/samples``) with request, response,
card and log fields, and the three parts genai imports lazily by name (``prepare`` on the
driver, ``task`` on the Ray Train workers, ``server`` in the Serve replicas).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from genai.families.base import Family
from genai.serve.api import Route
from genai.specbase import Section
from genai_mog.schemas import MoGCard, MoGLog, SamplesRequest, SamplesResponse


class MoGModelSpec(Section):
    """A mixture of ``components`` diagonal Gaussians (genai_mog/model.py)."""

    family: Literal["mog"]
    components: int = Field(8, ge=1, le=1024)


class MoGDataSpec(Section):
    """Points drawn from ``modes`` Gaussians spaced on a circle: the classic 2-D GAN benchmark,
    made on the driver (nothing to download)."""

    kind: Literal["mixture2d"] = "mixture2d"
    modes: int = Field(8, ge=1, le=256)
    radius: float = Field(2.0, gt=0.0)
    std: float = Field(0.05, gt=0.0)
    n_train: int = Field(4096, ge=16)
    n_val: int = Field(1024, ge=16)
    seed: int = Field(0, ge=0)


class MoGServeSpec(Section):
    max_points: int = Field(4096, ge=1, description="the most points one request may ask for")


SAMPLES = Route(
    path="/v1/mog/samples",
    request=SamplesRequest,
    response=SamplesResponse,
    id_prefix="mog",
    gateway="genai_mog.routes:samples",
    replica="genai_mog.replica:samples",
    summary="points sampled from a served mixture",
)

FAMILY = Family(
    name="mog",
    model_spec=MoGModelSpec,
    data_spec=MoGDataSpec,
    objective=("val_nll", "min"),
    metrics=("val_nll", "nll", "true_nll", "points_per_s"),
    lr_keys=("train.lr",),
    prepare="genai_mog.data:prepare",
    task="genai_mog.task:MoGTask",
    server="genai_mog.serving:MoGServer",
    routes=(SAMPLES,),
    card_fields=MoGCard,
    log_fields=MoGLog,
    serve_section=("mog", MoGServeSpec),
)
