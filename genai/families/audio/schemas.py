"""Request and response bodies of the speech route (OpenAI's ``audio.speech`` shape).

Strict, like every route. ``voice`` picks the generator's latent (the same voice name,
the same timbre across digits); ``seed`` overrides it. Unknown fields (``speed``,
``instructions``) are ignored.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class SpeechRequest(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")

    model: str | None = Field(None, max_length=128)
    input: str = Field(
        max_length=4096,
        description="digits to speak ('7', 'seven', '3 1 4'); for a music model, the "
        "opening of a piece in its ABC text (or empty)",
    )
    voice: str = Field("alloy", max_length=64, description="names a timbre (a latent seed)")
    response_format: Literal["wav", "midi"] = Field(
        "wav", description="wav: 16-bit PCM; midi: music models only"
    )
    seed: int | None = Field(None, ge=0, le=2**63 - 1)


class SpeechResponse(BaseModel):
    """The body is the audio file itself (``audio/wav`` or ``audio/midi``), not JSON."""

    content_type: str = "audio/wav"


class AudioCard(BaseModel):
    """What an audio model's card adds."""

    sample_rate: int
    clip_seconds: float
    conditional: bool
    class_names: list[str]


class AudioLog(BaseModel):
    """What a speech request adds to its generation-log record."""

    audio_sha256: str | None = None
    audio_format: str | None = None
