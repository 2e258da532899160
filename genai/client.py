"""A small client of genai's HTTP API (what ``genai query`` uses): a completion, whole or
as the server streams it (server-sent events)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx


class APIError(ValueError):
    """The server answered with an error (its status and OpenAI-shaped message)."""


def _message(status: int, data: Any) -> str:
    detail = data.get("error", {}).get("message", data) if isinstance(data, dict) else data
    return f"HTTP {status}: {detail}"


def complete(url: str, body: dict[str, Any], headers: dict[str, str], timeout: float) -> dict:
    """``POST /v1/completions``; the response body."""
    try:
        r = httpx.post(
            f"{url.rstrip('/')}/v1/completions", json=body, headers=headers, timeout=timeout
        )
    except httpx.HTTPError as exc:
        raise ConnectionError(f"cannot reach {url}: {exc}") from None
    data = r.json()
    if r.status_code != 200:
        raise APIError(_message(r.status_code, data))
    return data


def stream(
    url: str, body: dict[str, Any], headers: dict[str, str], timeout: float
) -> Iterator[dict[str, Any]]:
    """``POST /v1/completions`` with ``stream: true``: each event as the server sends it."""
    try:
        with httpx.stream(
            "POST",
            f"{url.rstrip('/')}/v1/completions",
            json={**body, "stream": True},
            headers=headers,
            timeout=timeout,
        ) as r:
            if r.status_code != 200:
                raise APIError(_message(r.status_code, json.loads(r.read() or b"{}")))
            for line in r.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                event = json.loads(line[len("data: ") :])
                if "error" in event:
                    raise APIError(f"stream failed: {event['error'].get('message')}")
                yield event
    except httpx.HTTPError as exc:
        raise ConnectionError(f"cannot reach {url}: {exc}") from None
