"""The image routes, model-replica side: what depends on the model (its size, channels,
class names) is checked here, then the batch runs on the family's server."""

from __future__ import annotations

import base64
import binascii
import io
from typing import Any

import numpy as np

from genai.families.images.serving import ImageServer
from genai.serve.api import ReplicaCalls, Route
from genai.serve.errors import APIError


def _model(calls: ReplicaCalls, route: Route, body: dict[str, Any]):
    info, server = calls.resolve(body.get("model"), route)
    assert isinstance(server, ImageServer)
    return info, server, calls.card(info["model"])


async def generations(calls: ReplicaCalls, route: Route, body: dict[str, Any]) -> dict[str, Any]:
    info, server, card = _model(calls, route, body)
    side = card["image_size"]
    if body.get("size") is not None and body["size"] != f"{side}x{side}":
        raise APIError(
            422,
            f"size must be {side}x{side} for model {info['model']!r}, got {body['size']!r}",
            "size",
        )
    label = _class_from_prompt(body["prompt"], card) if card["conditional"] else None
    images = await server.generate({"n": body["n"], "seed": body["seed"], "label": label})
    return {**info, "images": images}


async def reconstruct(calls: ReplicaCalls, route: Route, body: dict[str, Any]) -> dict[str, Any]:
    info, server, card = _model(calls, route, body)
    arrays = [_decode(b, card, f"images[{i}]") for i, b in enumerate(body["images"])]
    return {**info, "images": await server.reconstruct(arrays)}


async def interpolate(calls: ReplicaCalls, route: Route, body: dict[str, Any]) -> dict[str, Any]:
    info, server, card = _model(calls, route, body)
    a, b = _decode(body["image_a"], card, "image_a"), _decode(body["image_b"], card, "image_b")
    return {**info, "images": await server.interpolate(a, b, body["steps"])}


def _class_from_prompt(prompt: str, card: dict[str, Any]) -> int | None:
    """'7' or a class name -> label; empty -> None (random classes)."""
    names: list[str] = card["class_names"]
    text = prompt.strip()
    if not text:
        return None
    lowered = [n.lower() for n in names]
    if text.lower() in lowered:
        return lowered.index(text.lower())
    if text.isdigit() and int(text) < len(names):
        return int(text)
    shown = ", ".join(names[:20]) + (" ..." if len(names) > 20 else "")
    raise APIError(
        422,
        f"prompt must name a class of model {card['id']!r} ({shown}); got {text[:40]!r}",
        "prompt",
    )


def _decode(b64: str, card: dict[str, Any], field: str) -> np.ndarray:
    """A base64 PNG/JPEG of exactly the model's size -> (C, S, S) float32 in 0..255."""
    from PIL import Image, UnidentifiedImageError

    try:
        blob = base64.b64decode(b64, validate=True)
        with Image.open(io.BytesIO(blob)) as img:
            size = img.size
            img = img.convert("L" if card["channels"] == 1 else "RGB")
            arr = np.asarray(img, dtype=np.float32)
    except (binascii.Error, ValueError, UnidentifiedImageError, OSError):
        raise APIError(
            422, f"{field} is not a base64-encoded PNG or JPEG image", field.split("[")[0]
        ) from None
    side = card["image_size"]
    if size != (side, side):
        raise APIError(
            422,
            f"{field} is {size[0]}x{size[1]}; model {card['id']!r} takes {side}x{side}",
            field.split("[")[0],
        )
    return arr[None] if card["channels"] == 1 else arr.transpose(2, 0, 1)
