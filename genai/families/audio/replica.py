"""The speech route, model-replica side. A spoken-digit model speaks the digits of
``input``; an LM that writes ABC text (a music model) continues ``input`` into a piece,
which music21 turns into MIDI and fluidsynth into a WAV."""

from __future__ import annotations

import hashlib
import re
from typing import Any

from genai.families.audio.digits import WORDS
from genai.families.audio.serving import AudioServer
from genai.serve.api import ReplicaCalls, Route
from genai.serve.errors import APIError

MEDIA = {"wav": "audio/wav", "midi": "audio/midi"}
_SPLIT = re.compile(r"[\s,]+")


def voice_seed(voice: str) -> int:
    """A voice name -> a latent seed: the same name speaks with the same timbre."""
    return int.from_bytes(hashlib.sha256(voice.encode()).digest()[:8], "big") >> 1


def digits_of(text: str, max_words: int) -> list[int]:
    """'7', 'seven', '3 1 4', '3, one, 4' -> digit labels; a 422 naming ``input`` else."""
    words = [w for w in _SPLIT.split(text.strip().lower()) if w]
    if not words:
        raise APIError(422, "input must name digits to speak ('7', 'seven', '3 1 4')", "input")
    if len(words) > max_words:
        raise APIError(422, f"input may name at most {max_words} digits, got {len(words)}", "input")
    out = []
    for w in words:
        if w.isdigit() and len(w) == 1:
            out.append(int(w))
        elif w in WORDS:
            out.append(WORDS.index(w))
        else:
            raise APIError(422, f"input: {w[:20]!r} is not a digit (0-9 or zero ... nine)", "input")
    return out


async def speech(calls: ReplicaCalls, route: Route, body: dict[str, Any]) -> dict[str, Any]:
    info, server = calls.resolve(body.get("model"), route)
    fmt = body["response_format"]
    seed = body["seed"] if body.get("seed") is not None else voice_seed(body["voice"])
    if isinstance(server, AudioServer):
        if fmt != "wav":
            raise APIError(
                422,
                f"response_format {fmt!r} is for music models; model {info['model']!r} speaks wav",
                "response_format",
            )
        labels = digits_of(body["input"], calls.spec.audio.max_words)
        audio = await server.speak(labels, seed)
    else:
        from genai.families.audio.music.serve import compose

        audio = await compose(calls, info["model"], server, body["input"], fmt, seed)
    return {**info, "audio": audio, "format": fmt, "media_type": MEDIA[fmt]}
