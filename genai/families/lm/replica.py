"""The LM's routes, model-replica side: prompt and limit checks, then decoding
(:class:`~genai.families.lm.serving.LMServer`), whole or as a stream of text deltas."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from genai.decoding.generation import Generation
from genai.families.lm.serving import LMServer, NoChatTemplate, PromptTooLong
from genai.serve.api import ReplicaCalls, Route
from genai.serve.errors import APIError


def _open(
    calls: ReplicaCalls, route: Route, body: dict[str, Any], stream: bool
) -> tuple[dict, LMServer, Generation]:
    info, server = calls.resolve(body.get("model"), route)
    assert isinstance(server, LMServer)
    limit = calls.spec.max_tokens_limit
    req = dict(body)
    prompt: str = body.get("prompt") or ""
    if "messages" in body:  # chat
        if body.get("max_completion_tokens") is not None:
            req["max_tokens"] = body["max_completion_tokens"]
        try:
            prompt = server.chat_prompt(body["messages"])
        except NoChatTemplate as exc:
            raise APIError(400, str(exc), "model") from None
        if req.pop("max_tokens_default", False):
            # OpenAI's chat default: as long as the context (and the server) allow
            used = len(server.tokenizer(prompt, add_special_tokens=False)["input_ids"])
            req["max_tokens"] = max(1, min(limit, server.context - used))
    req.pop("max_tokens_default", None)
    if req["max_tokens"] > limit:
        raise APIError(422, f"max_tokens must be <= {limit}, got {req['max_tokens']}", "max_tokens")
    try:
        gen = server.open(req, prompt, stream=stream)
    except PromptTooLong as exc:
        raise APIError(400, str(exc), "max_tokens") from None
    params = {k: v for k, v in req.items() if k not in ("prompt", "messages", "model")}
    return {**info, "prompt": prompt, "params": params}, server, gen


def _result(gen: Generation) -> dict[str, Any]:
    return {
        "text": gen.text,
        "finish_reason": gen.finish_reason,
        "prompt_tokens": len(gen.prompt_ids),
        "completion_tokens": len(gen.tokens),
    }


async def complete(calls: ReplicaCalls, route: Route, body: dict[str, Any]) -> dict[str, Any]:
    info, server, gen = _open(calls, route, body, stream=False)
    await server.complete(gen)
    return {**info, **_result(gen)}


async def stream(calls: ReplicaCalls, route: Route, body: dict[str, Any]) -> AsyncIterator[dict]:
    """``{"opened": ...}`` (a bad request has raised before it), then ``{"delta",
    "finish_reason"}`` events, then ``{"done": ...}``."""
    info, server, gen = _open(calls, route, body, stream=True)
    yield {"opened": info}
    async for ev in server.stream(gen):
        yield {"delta": ev.delta, "finish_reason": ev.finish_reason}
    yield {"done": _result(gen)}
