"""The LM's routes, gateway side: ``/v1/completions`` and ``/v1/chat/completions``, whole or
streamed as server-sent events, in OpenAI's shapes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from fastapi.responses import StreamingResponse
from ray.exceptions import RayActorError

from genai.families.lm.schemas import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionRequest,
    CompletionResponse,
)
from genai.serve.api import GatewayCalls, Route, sse


def _usage(out: dict[str, Any]) -> dict[str, int]:
    return {
        "prompt_tokens": out["prompt_tokens"],
        "completion_tokens": out["completion_tokens"],
        "total_tokens": out["prompt_tokens"] + out["completion_tokens"],
    }


def _body(body: Any) -> dict[str, Any]:
    """The validated request as the model replica takes it."""
    req = body.model_dump()
    if isinstance(body, ChatCompletionRequest):
        explicit = "max_tokens" in body.model_fields_set or body.max_completion_tokens is not None
        req["max_tokens_default"] = not explicit
    return req


async def completions(calls: GatewayCalls, route: Route, body: CompletionRequest):
    return await _respond(calls, route, body, chat=False)


async def chat_completions(calls: GatewayCalls, route: Route, body: ChatCompletionRequest):
    return await _respond(calls, route, body, chat=True)


async def _respond(calls: GatewayCalls, route: Route, body: Any, chat: bool):
    if body.stream:
        async with calls.observe(route.path, opens=True) as rec:  # errors before it starts
            gen, opened = await calls.open_stream(route, _body(body), rec["key"])
            rec.update(opened)
        return _stream(calls, rec, gen, body, chat)
    async with calls.observe(route.path) as rec:
        if chat:
            outs = [await calls.call(route, _body(body), rec["key"])]
        else:  # one replica call per prompt, concurrently: each is a choice
            outs = await asyncio.gather(
                *(
                    calls.call(route, {**_body(body), "prompt": p}, rec["key"])
                    for p in body.prompts()
                )
            )
        out = outs[0]
        if len(outs) > 1:
            out = {
                **out,
                "prompt_tokens": sum(o["prompt_tokens"] for o in outs),
                "completion_tokens": sum(o["completion_tokens"] for o in outs),
            }
        rec.update(out, output="\n".join(o["text"] for o in outs))
    if chat:
        return ChatCompletionResponse(
            id=rec["id"],
            created=int(rec["time"]),
            model=out["model"],
            choices=[{"message": {"content": out["text"]}, "finish_reason": out["finish_reason"]}],
            usage=_usage(out),
        )
    return CompletionResponse(
        id=rec["id"],
        created=int(rec["time"]),
        model=out["model"],
        choices=[
            {
                "index": i,
                "text": o["text"],
                "logprobs": o.get("logprobs"),
                "finish_reason": o["finish_reason"],
            }
            for i, o in enumerate(outs)
        ],
        usage=_usage(out),
    )


def _stream(
    calls: GatewayCalls, rec: dict[str, Any], gen: Any, body: Any, chat: bool
) -> StreamingResponse:
    head = {
        "id": rec["id"],
        "object": "chat.completion.chunk" if chat else "text_completion",
        "created": int(rec["time"]),
        "model": rec["model"],
    }

    def chunk(text: str | None, finish: str | None, role: bool = False) -> dict[str, Any]:
        if chat:
            delta = {"role": "assistant", "content": ""} if role else {}
            if text:
                delta["content"] = text
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        else:
            choice = {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}
        return {**head, "choices": [choice]}

    async def events() -> AsyncIterator[str]:
        sent: list[str] = []
        try:
            async with calls.observe(rec["route"], rec):
                if chat:
                    yield sse(chunk(None, None, role=True))
                try:
                    async for ev in gen:
                        if "done" in ev:
                            rec.update(ev["done"], output=ev["done"]["text"])
                            break
                        sent.append(ev["delta"])
                        yield sse(chunk(ev["delta"], ev["finish_reason"]))
                except Exception as exc:
                    # headers and tokens are sent: the stream ends with an error event
                    # and [DONE], never a hang or a cut connection
                    rec.update(failed=500, error=f"{type(exc).__name__}: {exc}"[:500])
                    rec["output"] = "".join(sent)
                    message = (
                        "the model replica serving this stream died"
                        if isinstance(exc, RayActorError)
                        else str(exc)
                    )
                    yield sse({"error": {"message": message, "type": "server_error"}})
                    yield sse("[DONE]")
                    return
                if body.stream_options is not None and body.stream_options.include_usage:
                    yield sse({**head, "choices": [], "usage": _usage(rec)})
                yield sse("[DONE]")
        finally:
            gen.cancel()  # a client that left: the replica frees the sequence's slot

    return StreamingResponse(
        events(), media_type="text/event-stream", headers={"cache-control": "no-cache"}
    )
