"""The image routes, gateway side: generations (GAN and VAE), and the VAE's reconstruct
and interpolate. Each answers base64 PNGs; the generation log keeps their digests."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from genai.families.images.schemas import (
    ImageGenerationRequest,
    ImagesResponse,
    InterpolateRequest,
    ReconstructRequest,
)
from genai.serve.api import GatewayCalls, Route


async def _images(
    calls: GatewayCalls, route: Route, body: Any, params: dict[str, Any]
) -> ImagesResponse:
    async with calls.observe(route.path) as rec:
        rec["params"] = params
        out = await calls.call(route, body.model_dump(), rec["key"])
        images = out.pop("images")
        pngs = [base64.b64decode(b) for b in images]
        rec.update(out, image_sha256=[hashlib.sha256(p).hexdigest() for p in pngs])
        rec["attachments"] = {
            f"images/{h}.png": p for h, p in zip(rec["image_sha256"], pngs, strict=True)
        }
    return ImagesResponse(
        id=rec["id"], created=int(rec["time"]), data=[{"b64_json": b} for b in images]
    )


async def generations(calls: GatewayCalls, route: Route, body: ImageGenerationRequest):
    params = {"n": body.n, "seed": body.seed, "size": body.size, "prompt": body.prompt}
    return await _images(calls, route, body, params)


async def reconstruct(calls: GatewayCalls, route: Route, body: ReconstructRequest):
    return await _images(calls, route, body, {})


async def interpolate(calls: GatewayCalls, route: Route, body: InterpolateRequest):
    return await _images(calls, route, body, {"steps": body.steps})
