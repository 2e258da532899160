"""The gateway's ASGI middleware: body size, API keys (their actions and rate limits), and
the JSON content type, checked before routing. A key's models are checked where the model
a request names is resolved (the model replica), and /v1/models lists only those."""

from __future__ import annotations

from typing import Any

# modules, not their names: ``current_key`` is a ContextVar set per request
from genai.serve import keys, metrics
from genai.serve import routes as surface
from genai.serve.openai import error_response


def action_of(method: str, path: str) -> str | None:
    """The key action a request takes (None: any valid key may, e.g. GET /v1/models)."""
    if path.startswith("/v1/adapters"):
        return "admin"
    if path == "/v1/feedback":
        return "feedback"
    if path.startswith("/v1/generations"):
        return "log"
    if method == "POST" and path in surface.routes():
        return "generate"
    return None


class LimitsAndAuth:
    """Body size, API keys (and their rate limits) and the JSON content type, checked
    before routing. The key's name is set in :data:`~genai.serve.keys.current_key`.

    A plain ASGI middleware: Starlette's ``@app.middleware("http")`` (BaseHTTPMiddleware)
    wraps every request and response in extra tasks and streams, and serving is measured
    per millisecond here.
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.inner(scope, receive, send)
            return
        state = scope["app"].state  # the app Serve runs (a copy of this module's `app`)
        headers = {k: v for k, v in scope["headers"]}
        length = headers.get(b"content-length", b"").decode("latin-1")
        if length and (not length.isdigit() or int(length) > state.max_body_bytes):
            reply = error_response(
                413, f"request body exceeds {state.max_body_bytes} bytes", "body"
            )
            await reply(scope, receive, send)
            return
        ring: keys.KeyRing = state.keys
        if ring and scope["path"].startswith("/v1/"):
            auth = headers.get(b"authorization", b"").decode("latin-1")
            scheme, _, presented = auth.partition(" ")
            key = ring.identify(presented) if scheme.lower() == "bearer" else None
            if key is None:
                reply = error_response(
                    401,
                    "missing or invalid API key (Authorization: Bearer <key>)",
                    None,
                    "authentication_error",
                )
                await reply(scope, receive, send)
                return
            action = action_of(scope["method"], scope["path"])
            if action is not None and not key.may(action):
                reply = error_response(403, key.refusal(action), None, "permission_error")
                await reply(scope, receive, send)
                return
            keys.current_key.set(key.name)
            keys.current_scope.set(key.models)
            wait = ring.retry_after(key)
            if wait > 0:
                # label values are ours, never the client's text (cardinality, encoding)
                known = any(getattr(r, "path", None) == scope["path"] for r in scope["app"].routes)
                route = scope["path"] if known else "other"
                metrics.requests_total().inc(
                    tags={"route": route, "model": "", "status": "429", "key": key.name}
                )
                reply = error_response(
                    429,
                    f"rate limit of key {key.name!r} ({key.requests_per_minute:g} requests/min) "
                    "exceeded",
                    None,
                    "rate_limit_error",
                    headers={"Retry-After": keys.retry_after_header(wait)},
                )
                await reply(scope, receive, send)
                return
        if scope["method"] == "POST" and not headers.get(b"content-type", b"").startswith(
            b"application/json"
        ):
            # `curl -d '{...}'` sends application/x-www-form-urlencoded; every body here is JSON
            rest = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
            scope = {**scope, "headers": [*rest, (b"content-type", b"application/json")]}
        await self.inner(scope, receive, send)
