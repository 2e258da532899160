"""The bodies every deployment shares, in OpenAI's shapes: model cards, errors, feedback.

A family's routes bring their own bodies (``Route.request``/``response``); its card fields
(``Family.card_fields``) join :class:`ModelCard` in :func:`model_card`, and its id prefixes
make :func:`feedback_request`'s id pattern.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "genai"
    family: str
    step: int
    lineage: dict[str, Any] | None = Field(
        None,
        description="a checkpoint promoted from a sweep: sweep, trial, config, metric; an "
        "imported one (kind: import): source file, its sha256, quantization",
    )


def model_card(card_fields: Iterable[type[BaseModel]]) -> type[ModelCard]:
    """:class:`ModelCard` with every family's card fields, each optional (``null`` on the
    cards of models of other families)."""
    fields: dict[str, Any] = {}
    for model in card_fields:
        for name, info in model.model_fields.items():
            fields.setdefault(
                name, (info.annotation | None, Field(None, description=info.description))
            )
    return create_model("ModelCard", __base__=ModelCard, **fields)


def model_list(card: type[ModelCard]) -> type[BaseModel]:
    return create_model("ModelList", object=(Literal["list"], "list"), data=(list[card], ...))  # type: ignore[valid-type]


class AdapterRequest(BaseModel):
    """``POST /v1/adapters``: a LoRA adapter checkpoint to serve as model ``name``."""

    model_config = ConfigDict(strict=True, extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    path: str = Field(
        min_length=1, max_length=4096, description="the checkpoint, as the model replicas see it"
    )


class ErrorBody(BaseModel):
    message: str
    type: str = "invalid_request_error"
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


class _Feedback(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")

    id: str
    score: float = Field(ge=-1, le=1, description="-1 bad ... 1 good; fractions for graded scores")
    comment: str | None = Field(None, max_length=4000)


def feedback_request(prefixes: Iterable[str]) -> type[_Feedback]:
    """``POST /v1/feedback``'s body: ``id`` must be a response id of a served route."""
    known = sorted(set(prefixes))
    pattern = rf"^({'|'.join(known)})-[0-9a-f]{{24}}$"
    shown = ", ".join(f"{p}-..." for p in known)
    return create_model(
        "FeedbackRequest",
        __base__=_Feedback,
        id=(str, Field(pattern=pattern, description=f"a response's id: {shown}")),
    )


class FeedbackResponse(BaseModel):
    id: str
    object: Literal["feedback"] = "feedback"
    score: float
    comment: str | None = None
