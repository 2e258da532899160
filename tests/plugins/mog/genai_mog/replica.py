"""``POST /v1/mog/samples``, model-replica side: the serve spec's cap, then the draw."""

from __future__ import annotations

from typing import Any

from genai.serve.api import ReplicaCalls, Route
from genai.serve.errors import APIError
from genai_mog.serving import MoGServer


async def samples(calls: ReplicaCalls, route: Route, body: dict[str, Any]) -> dict[str, Any]:
    info, server = calls.resolve(body.get("model"), route)
    assert isinstance(server, MoGServer)
    cap = calls.spec.mog.max_points
    if body["n"] > cap:
        raise APIError(
            422, f"n must be at most {cap} (serve spec mog.max_points), got {body['n']}", "n"
        )
    return {**info, "points": server.sample(body["n"], body["seed"])}
