"""Request and response bodies of the LM routes, in OpenAI's shapes so existing clients work.

Strict: ``"5"`` is not an integer and ``true`` is not a number. Unknown fields that OpenAI
clients send (``user``, ``logprobs`` ...) are ignored.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

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


MAX_PROMPTS = 64  # prompts in one completions request (each is a choice of the response)
_TokenIds = Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1, max_length=200_000)]


class CompletionRequest(_Sampled):
    prompt: (
        Annotated[str, Field(max_length=200_000)]
        | _TokenIds
        | Annotated[
            list[Annotated[str, Field(max_length=200_000)]],
            Field(min_length=1, max_length=MAX_PROMPTS),
        ]
        | Annotated[list[_TokenIds], Field(min_length=1, max_length=MAX_PROMPTS)]
    ) = Field(description="text, token ids, or a list of either (one choice each)")
    # 0 with echo: score the prompt only (what evaluation harnesses ask for)
    max_tokens: int = Field(16, ge=0, le=MAX_TOKENS_CEILING)
    logprobs: int | None = Field(
        None, ge=0, le=20, description="log-probabilities of the tokens and of this many likeliest"
    )
    echo: bool = Field(
        False, description="the prompt back before the completion (and its logprobs)"
    )

    @model_validator(mode="after")
    def _consistent(self) -> CompletionRequest:
        if self.max_tokens == 0 and not self.echo:
            raise _field_error(
                "max_tokens", 0, "max_tokens must be >= 1 (0 only with echo: scoring the prompt)"
            )
        if self.stream and len(self.prompts()) > 1:
            raise _field_error("prompt", "[...]", "a streamed request takes one prompt")
        return self

    def prompts(self) -> list[str | list[int]]:
        p: Any = self.prompt
        if isinstance(p, str) or (p and isinstance(p[0], int)):
            return [p]
        return list(p)


def _field_error(field: str, value: Any, message: str) -> ValidationError:
    """A cross-field check's error located at ``field`` (the 4xx body names it)."""
    error = PydanticCustomError("value_error", message)
    return ValidationError.from_exception_data(
        "CompletionRequest", [InitErrorDetails(type=error, loc=(field,), input=value)]
    )


class ChatMessage(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")

    role: Literal["system", "user", "assistant"]
    content: str = Field(max_length=200_000)


class ChatCompletionRequest(_Sampled):
    messages: list[ChatMessage] = Field(min_length=1, max_length=256)
    # OpenAI's newer name for max_tokens; either may be sent
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS_CEILING)


class Logprobs(BaseModel):
    """OpenAI's (legacy) completions logprobs: per token, with ``echo`` the prompt's first."""

    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]


class Choice(BaseModel):
    text: str
    index: int = 0
    logprobs: Logprobs | None = None
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
    base: dict[str, Any] | None = Field(
        None, description="a fine-tuned model's base: its path, name and weights sha256"
    )
    adapter: dict[str, Any] | None = Field(None, description="a LoRA adapter's settings")
    weights_sha256: str | None = Field(None, description="the weights adapters attach to")


class LMLog(BaseModel):
    """What an LM request adds to its generation-log record."""

    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
