"""Request and response bodies, in OpenAI's shapes so existing clients work.

Strict: ``"5"`` is not an integer and ``true`` is not a number. Unknown fields
that OpenAI clients send (``user``, ``logprobs`` ...) are ignored.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# An absolute ceiling; the served limit (serve.max_tokens_limit and the model's
# context) is checked per request and named in the error too.
MAX_TOKENS_CEILING = 1 << 16


class StreamOptions(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")

    include_usage: bool = False


class _Sampled(BaseModel):
    """Fields every LM route shares."""

    model_config = ConfigDict(strict=True, extra="ignore")

    model: str | None = Field(
        None, max_length=128, description="model id; optional when one model is served"
    )
    max_tokens: int = Field(16, ge=1, le=MAX_TOKENS_CEILING)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    stop: (
        str
        | Annotated[list[Annotated[str, Field(min_length=1, max_length=64)]], Field(max_length=4)]
        | None
    ) = None
    n: Literal[1] = 1
    stream: bool = False
    stream_options: StreamOptions | None = None


class CompletionRequest(_Sampled):
    prompt: str = Field(max_length=200_000)


class ChatMessage(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")

    role: Literal["system", "user", "assistant"]
    content: str = Field(max_length=200_000)


class ChatCompletionRequest(_Sampled):
    messages: list[ChatMessage] = Field(min_length=1, max_length=256)
    # OpenAI's newer name for max_tokens; either may be sent
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS_CEILING)


class Choice(BaseModel):
    text: str
    index: int = 0
    logprobs: None = None
    finish_reason: Literal["stop", "length"]


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage


class ChatChoiceMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int = 0
    message: ChatChoiceMessage
    logprobs: None = None
    finish_reason: Literal["stop", "length"]


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "genai"
    family: str
    step: int
    context_length: int | None = None
    chat: bool | None = Field(None, description="LM whose tokenizer has a chat template")
    image_size: int | None = None
    channels: int | None = None
    conditional: bool | None = None
    class_names: list[str] | None = None
    lineage: dict[str, Any] | None = Field(
        None, description="for a checkpoint promoted from a sweep: sweep, trial, config, metric"
    )


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorBody(BaseModel):
    message: str
    type: str = "invalid_request_error"
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


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


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")

    id: str = Field(
        pattern=r"^(cmpl|chatcmpl|img)-[0-9a-f]{24}$",
        description="a response's id: cmpl-..., chatcmpl-... or img-...",
    )
    score: float = Field(ge=-1, le=1, description="-1 bad ... 1 good; fractions for graded scores")
    comment: str | None = Field(None, max_length=4000)


class FeedbackResponse(BaseModel):
    id: str
    object: Literal["feedback"] = "feedback"
    score: float
    comment: str | None = None
