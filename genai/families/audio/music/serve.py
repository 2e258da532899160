"""The speech route for a music model (an LM trained on ABC): continue the prompt into a
piece, parse it with music21, answer MIDI or a WAV fluidsynth renders."""

from __future__ import annotations

import asyncio
import re
from typing import Any

from genai.families.audio.music import bounded
from genai.families.audio.music.encoding import parse_abc
from genai.families.audio.music.render import can_render_wav, midi_bytes, wav_bytes
from genai.families.audio.serving import count_seconds
from genai.serve.api import ReplicaCalls
from genai.serve.errors import APIError

HEADER = "X:1\n"
DEFAULT_BODY_HEADER = "X:1\nM:4/4\nL:1/8\nK:C\nV:1\n"  # for a prompt of bars without one
ATTEMPTS = 3  # sampled pieces that do not parse are drawn again, with the next seed
_ABC = re.compile(r"^[\x20-\x7e\n\t]*$")
TEMPERATURE = 1.0  # the route's sampling temperature, which the judge uses too
SECONDS_PER_QUARTER = 0.5  # music21's default tempo, 120 quarters per minute


def prompt_of(text: str) -> str:
    """The model's prompt: a whole header as given, bars after a default header, or the
    bare piece opening for an empty input."""
    if not _ABC.match(text):
        raise APIError(422, "input must be ABC text (printable ASCII)", "input")
    text = text.strip()
    if not text:
        return HEADER
    if text.startswith("X:"):
        return text + "\n"
    if re.search(r"^[A-Za-z]:", text, re.M):
        return "X:1\n" + text + "\n"
    return DEFAULT_BODY_HEADER + text + " "


def first_piece(text: str) -> str:
    """The text up to where a second piece (``X:``) begins."""
    at = text.find("\nX:", 1)
    return text if at < 0 else text[: at + 1]


def to_midi(text: str) -> tuple[bytes, float]:
    """ABC text -> (MIDI bytes, length in quarters); ValueError if music21 cannot read it
    or cannot write what it read as MIDI (a sampled repeat sign with no bars to repeat
    raises music21's StreamException there)."""
    score = parse_abc(text)
    try:
        return midi_bytes(score), float(score.duration.quarterLength)
    except Exception as exc:  # music21's own exceptions are not ValueErrors
        raise ValueError(
            f"not renderable as MIDI: {type(exc).__name__}: {str(exc)[:200]}"
        ) from None


async def compose(
    calls: ReplicaCalls, model: str, server: Any, text: str, fmt: str, seed: int
) -> bytes:
    from genai.families.lm.serving import PromptTooLong

    if fmt == "wav" and not can_render_wav():
        raise APIError(
            400,
            "this server cannot render music to wav (it needs fluidsynth and "
            "fluid-soundfont-gm); ask for response_format midi",
            "response_format",
        )
    prompt = prompt_of(text)
    used = len(server.tokenizer(prompt, add_special_tokens=False)["input_ids"])
    room = min(calls.spec.audio.music_max_tokens, server.context - used)
    if room < 16:
        raise APIError(400, f"input leaves the model no room to write ({used} tokens)", "input")
    last = ""
    for attempt in range(ATTEMPTS):
        req = {"max_tokens": room, "temperature": TEMPERATURE, "top_p": 1.0, "seed": seed + attempt}
        try:
            gen = server.open(req, prompt, stream=False)
        except PromptTooLong as exc:
            raise APIError(400, str(exc), "input") from None
        await server.complete(gen)
        piece = first_piece(prompt + gen.text)
        try:  # in a worker process with a deadline: the text is the model's, untrusted
            midi, quarters = await asyncio.to_thread(bounded.run, to_midi, piece)
        except ValueError as exc:
            last = str(exc)
            continue
        count_seconds(model, quarters * SECONDS_PER_QUARTER)
        return midi if fmt == "midi" else await asyncio.to_thread(wav_bytes, midi)
    raise APIError(
        422,
        f"model {model!r} wrote no parseable music in {ATTEMPTS} tries ({last}); "
        "is it a music model (an LM trained on ABC text)?",
        "model",
    )
