"""The speech route, gateway side: the audio file itself as the body (OpenAI's shape), its
digest in the generation log and the file beside it."""

from __future__ import annotations

import hashlib

from fastapi import Response

from genai.families.audio.schemas import SpeechRequest
from genai.serve.api import GatewayCalls, Route

EXTENSION = {"wav": "wav", "midi": "mid"}


async def speech(calls: GatewayCalls, route: Route, body: SpeechRequest) -> Response:
    async with calls.observe(route.path) as rec:
        rec["prompt"] = body.input
        rec["params"] = {"voice": body.voice, "seed": body.seed, "format": body.response_format}
        out = await calls.call(route, body.model_dump(), rec["key"])
        audio: bytes = out.pop("audio")
        media = out.pop("media_type")
        fmt = out.pop("format")
        digest = hashlib.sha256(audio).hexdigest()
        rec.update(out, audio_sha256=digest, audio_format=fmt)
        rec["attachments"] = {f"audio/{digest}.{EXTENSION[fmt]}": audio}
    return Response(content=audio, media_type=media, headers={"x-request-id": rec["id"]})
