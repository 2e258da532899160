"""The LM's routes, model-replica side: prompt and limit checks, then decoding
(:class:`~genai.families.lm.serving.LMServer`), whole or as a stream of text deltas."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from genai.decoding.generation import Generation
from genai.families.lm.adapters import AdapterServer
from genai.families.lm.serving import BadTokens, LMServer, NoChatTemplate, PromptTooLong
from genai.serve.api import ReplicaCalls, Route
from genai.serve.errors import APIError


def _open(
    calls: ReplicaCalls, route: Route, body: dict[str, Any], stream: bool
) -> tuple[dict, LMServer | AdapterServer, Generation]:
    info, server = calls.resolve(body.get("model"), route)
    assert isinstance(server, (LMServer, AdapterServer))
    limit = calls.spec.max_tokens_limit
    req = dict(body)
    prompt: str | list[int] = body.get("prompt") or ""
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
    except BadTokens as exc:
        raise APIError(400, str(exc), "prompt") from None
    params = {k: v for k, v in req.items() if k not in ("prompt", "messages", "model")}
    shown = prompt if isinstance(prompt, str) else server.tokenizer.decode(prompt)
    return {**info, "prompt": shown, "params": params}, server, gen


def _result(gen: Generation, tokenizer: Any = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "text": gen.text,
        "finish_reason": gen.finish_reason,
        "prompt_tokens": len(gen.prompt_ids),
        "completion_tokens": len(gen.tokens),
    }
    if gen.sampling.echo:
        out["text"] = tokenizer.decode(gen.prompt_ids) + gen.text
    if gen.sampling.logprobs is not None:
        out["logprobs"] = logprobs_body(gen, tokenizer)
    return out


def logprobs_body(gen: Generation, tokenizer: Any) -> dict[str, Any]:
    """OpenAI's completions ``logprobs``: token strings, their log-probabilities, the
    likeliest alternatives by token string, and each token's offset in the text."""
    ids = (gen.prompt_ids if gen.sampling.echo else []) + gen.tokens
    pairs = (gen.prompt_logprobs if gen.sampling.echo else []) + gen.logprobs
    names = [tokenizer.decode([t]) for t in ids]
    top: list[dict[str, float] | None] = []
    for chosen, alternatives in pairs:
        found: dict[str, float] = {}
        for t, lp in alternatives.items():  # two ids may read the same: keep the likelier
            name = tokenizer.decode([t])
            found[name] = max(lp, found.get(name, lp))
        top.append(None if chosen is None else found)  # None: the prompt's first token
    offsets, at = [], 0
    for name in names:
        offsets.append(at)
        at += len(name)
    return {
        "tokens": names,
        "token_logprobs": [lp for lp, _ in pairs],
        "top_logprobs": top,
        "text_offset": offsets,
    }


async def complete(calls: ReplicaCalls, route: Route, body: dict[str, Any]) -> dict[str, Any]:
    info, server, gen = _open(calls, route, body, stream=False)
    await server.complete(gen)
    return {**info, **_result(gen, server.tokenizer)}


async def stream(calls: ReplicaCalls, route: Route, body: dict[str, Any]) -> AsyncIterator[dict]:
    """``{"opened": ...}`` (a bad request has raised before it), then ``{"delta",
    "finish_reason"}`` events, then ``{"done": ...}``."""
    info, server, gen = _open(calls, route, body, stream=True)
    yield {"opened": info}
    async for ev in server.stream(gen):
        yield {"delta": ev.delta, "finish_reason": ev.finish_reason}
    yield {"done": _result(gen, server.tokenizer)}
