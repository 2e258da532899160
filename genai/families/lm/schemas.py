"""Request and response bodies of the LM routes, in OpenAI's shapes so existing clients work.

Strict: ``"5"`` is not an integer and ``true`` is not a number. Unknown fields that OpenAI
clients send (``user``, ``logprobs`` ...) are ignored.
"""

from __future__ import annotations

from typing import Annotated, Literal

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


class LMCard(BaseModel):
    """What an LM's model card adds."""

    context_length: int = Field(description="tokens of prompt + completion the model takes")
    chat: bool = Field(description="LM whose tokenizer has a chat template")


class LMLog(BaseModel):
    """What an LM request adds to its generation-log record."""

    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
