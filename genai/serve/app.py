"""The Serve application: a FastAPI gateway routing by ``model`` to one deployment per checkpoint.

Errors are JSON in OpenAI's shape, ``{"error": {"message", "type", "param"}}``,
name the field, never echo the request body, and never reach a model replica:
bad input is rejected at the gateway.
"""

# No `from __future__ import annotations` here: Serve wraps the ingress methods, and
# FastAPI then cannot resolve string annotations (the body became a query parameter).
import asyncio
import base64
import binascii
import contextlib
import io
import json
import os
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from ray import serve
from starlette.exceptions import HTTPException as StarletteHTTPException

from genai.checkpoint import read_meta, resolve
from genai.config import ServeSpec
from genai.families import get_family
from genai.families.lm.serving import NoChatTemplate, PromptTooLong
from genai.models.decoding import Generation

# modules, not their names: this file's classes are pickled by value (a ContextVar cannot be)
from genai.serve import genlog, keys, metrics, registry
from genai.serve.schemas import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionRequest,
    CompletionResponse,
    FeedbackRequest,
    FeedbackResponse,
    ImageGenerationRequest,
    ImagesResponse,
    InterpolateRequest,
    ModelCard,
    ModelList,
    ReconstructRequest,
)

app = FastAPI(
    title="genai",
    description="Completions, chat and images from genai checkpoints (OpenAI-style API)",
)


class APIError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        kind: str = "invalid_request_error",
    ):
        super().__init__(message)
        self.status, self.message, self.param, self.kind = status, message, param, kind


def _error(
    status: int,
    message: str,
    param: str | None = None,
    kind: str = "invalid_request_error",
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(
        status_code=status,
        content={"error": {"message": message, "type": kind, "param": param, "code": None}},
        headers=headers,
    )


@app.exception_handler(APIError)
async def _api_error(_: Request, exc: APIError) -> JSONResponse:
    return _error(exc.status, exc.message, exc.param, exc.kind)


@app.exception_handler(RequestValidationError)
async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    # FastAPI's default echoes the input back (a 7.9 MB bad field gave a 5.2 MB error body,
    # FACTS.md): report the field and the rule only.
    err = exc.errors()[0]
    # loc is ("body", field, <union member / index>...): the request's field is what the client knows
    loc = [str(p) for p in err.get("loc", ()) if p != "body"]
    param = loc[0] if loc else "body"
    if err.get("type") == "json_invalid":
        return _error(400, "request body is not valid JSON", "body")
    if err.get("type") == "missing":
        return _error(422, f"{param} is required", param)
    return _error(422, f"{param}: {err.get('msg', 'invalid value')}", param)


@app.exception_handler(StarletteHTTPException)
async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    return _error(
        exc.status_code,
        str(exc.detail),
        "body" if exc.status_code == 400 else None,  # Starlette's 400: the body did not parse
        "not_found" if exc.status_code == 404 else "http_error",
    )


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
            reply = _error(413, f"request body exceeds {state.max_body_bytes} bytes", "body")
            await reply(scope, receive, send)
            return
        ring: keys.KeyRing = state.keys
        if ring and scope["path"].startswith("/v1/"):
            auth = headers.get(b"authorization", b"").decode("latin-1")
            scheme, _, presented = auth.partition(" ")
            key = ring.identify(presented) if scheme.lower() == "bearer" else None
            if key is None:
                reply = _error(
                    401,
                    "missing or invalid API key (Authorization: Bearer <key>)",
                    None,
                    "authentication_error",
                )
                await reply(scope, receive, send)
                return
            keys.current_key.set(key.name)
            wait = ring.retry_after(key)
            if wait > 0:
                # label values are ours, never the client's text (cardinality, encoding)
                known = any(getattr(r, "path", None) == scope["path"] for r in scope["app"].routes)
                route = scope["path"] if known else "other"
                metrics.requests_total().inc(
                    tags={"route": route, "model": "", "status": "429", "key": key.name}
                )
                reply = _error(
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


app.add_middleware(LimitsAndAuth)


# Helpers live above the Gateway: Serve pickles the decorated class by value when it is
# defined, and a global defined after it would be missing in the replica.
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


def _sse(payload: dict[str, Any] | str) -> str:
    return f"data: {payload if isinstance(payload, str) else json.dumps(payload)}\n\n"


ID_PREFIX = {
    "/v1/completions": "cmpl",
    "/v1/chat/completions": "chatcmpl",
    "/v1/images/generations": "img",
    "/v1/vae/reconstruct": "img",
    "/v1/vae/interpolate": "img",
}


def _record_lm(rec: dict[str, Any], gen: Generation) -> None:
    rec.update(
        output=gen.text,
        finish_reason=gen.finish_reason,
        prompt_tokens=len(gen.prompt_ids),
        completion_tokens=len(gen.tokens),
    )


def _record_images(rec: dict[str, Any], images: list[str]) -> None:
    rec["pngs"] = [base64.b64decode(b) for b in images]


def _images_response(rec: dict[str, Any], images: list[str]) -> ImagesResponse:
    return ImagesResponse(
        id=rec["id"], created=int(rec["time"]), data=[{"b64_json": b} for b in images]
    )


def _usage(gen: Generation) -> dict[str, int]:
    prompt, completion = len(gen.prompt_ids), len(gen.tokens)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


@serve.deployment
@serve.ingress(app)
class Gateway:
    """The HTTP ingress, holding every served model in its own process.

    Models live in the gateway's replica rather than behind their own deployments:
    each Serve hop costs about 4 ms of CPU per request on 2 cores (FACTS.md), and an
    LM replica batches its concurrent requests itself (genai/models/decoding.py).
    The whole application scales out by replicas of this one deployment.
    """

    def __init__(self, settings: dict[str, Any]) -> None:
        spec = ServeSpec.model_validate(settings["spec"])
        # models load in reconfigure(): Serve calls it with the user_config right after
        # __init__, and again when only the user_config changed (no replica restart)
        self.registry = registry.Registry(spec)
        self.max_tokens_limit = spec.max_tokens_limit
        self.watch = (spec.watch_interval_s, settings.get("config_file"), settings.get("base"))
        self.watching = spec.watch
        app.state.max_body_bytes = spec.max_body_bytes
        app.state.keys = keys.KeyRing(settings["keys"])
        replica = serve.get_replica_context().replica_id.unique_id
        log_spec = spec.generation_log
        self.genlog = None if log_spec.mode == "off" else genlog.GenerationLog(log_spec, replica)

    async def reconfigure(self, config: dict[str, Any]) -> None:
        sources = [str(s) for s in config["checkpoints"]]
        if not self.registry.served:
            await asyncio.to_thread(self.registry.load_all, sources)
            if self.watching:
                self.registry.watch(*self.watch)
        else:
            await asyncio.to_thread(self.registry.apply, sources)

    @property
    def models(self) -> dict[str, Any]:
        return self.registry.servers

    @property
    def cards(self) -> dict[str, dict[str, Any]]:
        return self.registry.cards

    def __del__(self) -> None:
        if hasattr(self, "registry"):
            self.registry.close()
        if getattr(self, "genlog", None) is not None:
            self.genlog.close()  # completes the open Parquet file

    def _route(
        self, model: str | None, families: tuple[str, ...], rec: dict[str, Any]
    ) -> tuple[str, Any]:
        """The served model a request names (or the only one of the right family); the
        record gets the checkpoint it is served from (one snapshot: a swap may follow)."""
        served = self.registry.served
        if model is None:
            fitting = [n for n in sorted(served) if served[n].family in families]
            if len(fitting) != 1:
                raise APIError(
                    422,
                    f"model is required: {len(fitting)} {'/'.join(families)} models are served",
                    "model",
                )
            model = fitting[0]
        if model not in served:
            raise APIError(
                404,
                f"model {model!r} is not served; GET /v1/models lists them",
                "model",
                "not_found",
            )
        s = served[model]
        rec.update(model=model, step=s.card["step"], spec_hash=s.spec_hash)
        if s.family not in families:
            raise APIError(
                400,
                f"model {model!r} is a {s.family} model; this route takes {'/'.join(families)}",
                "model",
            )
        return model, s.server

    @contextlib.asynccontextmanager
    async def _observe(self, route: str, rec: dict[str, Any] | None = None, opens: bool = False):
        """Count, time and log one request. ``opens``: the request goes on as a stream,
        whose own ``_observe`` (with the same record) finishes it unless opening failed."""
        if rec is None:
            rec = {
                "id": f"{ID_PREFIX[route]}-{uuid.uuid4().hex[:24]}",
                "route": route,
                "time": time.time(),
                "t0": time.perf_counter(),
                "key": keys.current_key.get(),
            }
        status = 200
        try:
            yield rec
        except APIError as exc:
            status, rec["error"] = exc.status, exc.message
            raise
        except Exception as exc:
            status, rec["error"] = 500, f"{type(exc).__name__}: {exc}"[:500]
            raise
        finally:
            if not (opens and status == 200):
                self._finish(rec, status)

    def _finish(self, rec: dict[str, Any], status: int) -> None:
        rec["status"], rec["latency_s"] = status, time.perf_counter() - rec["t0"]
        # a model label is a served model's name, never the client's text: Ray's metrics
        # reject non-ASCII values, and labels must stay few
        tags = {"route": rec["route"], "model": rec.get("model") or ""}
        metrics.requests_total().inc(tags={**tags, "status": str(status), "key": rec["key"]})
        metrics.request_latency_s().observe(rec["latency_s"], tags=tags)
        if self.genlog is not None:
            self.genlog.record(rec, rec.pop("pngs", ()))

    @app.get("/healthz")
    async def healthz(self) -> dict[str, Any]:
        ctx = serve.get_replica_context()
        return {
            "status": "ok",
            "models": sorted(self.models),
            "replica": ctx.replica_id.unique_id,
            # per LM: sequences decoding and waiting now, and counters since start
            "decoding": {n: m.health() for n, m in self.models.items() if hasattr(m, "health")},
            # what each model is served from, and recent swaps and refused checkpoints
            **self.registry.health(),
        }

    @app.get("/v1/models", response_model=ModelList)
    async def list_models(self) -> ModelList:
        return ModelList(data=[ModelCard(**self.cards[n]) for n in sorted(self.models)])

    # ------------------------------------------------------------------ LM routes

    def _open_lm(
        self, body: Any, rec: dict[str, Any], prompt: str | None = None
    ) -> tuple[str, Any, Generation]:
        name, lm = self._route(body.model, ("lm",), rec)
        req = body.model_dump()
        if isinstance(body, ChatCompletionRequest):
            if body.max_completion_tokens is not None:
                req["max_tokens"] = body.max_completion_tokens
            try:
                prompt = lm.chat_prompt([m.model_dump() for m in body.messages])
            except NoChatTemplate as exc:
                raise APIError(400, str(exc), "model") from None
            if "max_tokens" not in body.model_fields_set and body.max_completion_tokens is None:
                # OpenAI's chat default: as long as the context (and the server) allow
                used = len(lm.tokenizer(prompt, add_special_tokens=False)["input_ids"])
                req["max_tokens"] = max(1, min(self.max_tokens_limit, lm.context - used))
        if req["max_tokens"] > self.max_tokens_limit:
            raise APIError(
                422,
                f"max_tokens must be <= {self.max_tokens_limit}, got {req['max_tokens']}",
                "max_tokens",
            )
        rec["prompt"] = prompt
        rec["params"] = {k: v for k, v in req.items() if k not in ("prompt", "messages", "model")}
        try:
            return name, lm, lm.open(req, prompt, stream=body.stream)
        except PromptTooLong as exc:
            raise APIError(400, str(exc), "max_tokens") from None

    def _stream(
        self, rec: dict[str, Any], name: str, lm: Any, gen: Generation, body: Any, chat: bool
    ) -> StreamingResponse:
        head = {
            "id": rec["id"],
            "object": "chat.completion.chunk" if chat else "text_completion",
            "created": int(time.time()),
            "model": name,
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
            async with self._observe(rec["route"], rec):
                if chat:
                    yield _sse(chunk(None, None, role=True))
                try:
                    async for ev in lm.stream(gen):
                        yield _sse(chunk(ev.delta, ev.finish_reason))
                except Exception as exc:  # headers are sent: the error travels as an event
                    yield _sse({"error": {"message": str(exc), "type": "server_error"}})
                    raise
                finally:
                    _record_lm(rec, gen)
                if body.stream_options is not None and body.stream_options.include_usage:
                    yield _sse({**head, "choices": [], "usage": _usage(gen)})
                yield _sse("[DONE]")

        return StreamingResponse(
            events(), media_type="text/event-stream", headers={"cache-control": "no-cache"}
        )

    @app.post("/v1/completions", response_model=CompletionResponse)
    async def completions(self, body: CompletionRequest):
        return await self._lm_route("/v1/completions", body, chat=False)

    @app.post("/v1/chat/completions", response_model=ChatCompletionResponse)
    async def chat_completions(self, body: ChatCompletionRequest):
        return await self._lm_route("/v1/chat/completions", body, chat=True)

    async def _lm_route(self, route: str, body: Any, chat: bool):
        prompt = None if chat else body.prompt
        if body.stream:
            async with self._observe(route, opens=True) as rec:  # errors before it starts
                name, lm, gen = self._open_lm(body, rec, prompt)
            return self._stream(rec, name, lm, gen, body, chat=chat)
        async with self._observe(route) as rec:
            name, lm, gen = self._open_lm(body, rec, prompt)
            try:
                await lm.complete(gen)
            finally:
                _record_lm(rec, gen)
        if chat:
            return ChatCompletionResponse(
                id=rec["id"],
                created=int(rec["time"]),
                model=name,
                choices=[{"message": {"content": gen.text}, "finish_reason": gen.finish_reason}],
                usage=_usage(gen),
            )
        return CompletionResponse(
            id=rec["id"],
            created=int(rec["time"]),
            model=name,
            choices=[{"text": gen.text, "finish_reason": gen.finish_reason}],
            usage=_usage(gen),
        )

    @app.post("/v1/feedback", response_model=FeedbackResponse)
    async def feedback(self, body: FeedbackRequest) -> FeedbackResponse:
        """A score for a logged request (joined to it by ``genai generations``)."""
        if self.genlog is None:
            raise APIError(
                409, "the generation log is off on this deployment: feedback is not kept", "id"
            )
        self.genlog.score(body.id, body.score, body.comment, keys.current_key.get())
        return FeedbackResponse(id=body.id, score=body.score, comment=body.comment)

    # ------------------------------------------------------------------ image routes

    @app.post("/v1/images/generations", response_model=ImagesResponse)
    async def image_generations(self, body: ImageGenerationRequest) -> ImagesResponse:
        async with self._observe("/v1/images/generations") as rec:
            name, model = self._route(body.model, ("gan", "vae"), rec)
            rec["prompt"] = body.prompt
            rec["params"] = {"n": body.n, "seed": body.seed, "size": body.size}
            card = self.cards[name]
            side = card["image_size"]
            if body.size is not None and body.size != f"{side}x{side}":
                raise APIError(
                    422, f"size must be {side}x{side} for model {name!r}, got {body.size!r}", "size"
                )
            label = _class_from_prompt(body.prompt, card) if card["conditional"] else None
            images = await model.generate({"n": body.n, "seed": body.seed, "label": label})
            _record_images(rec, images)
        return _images_response(rec, images)

    @app.post("/v1/vae/reconstruct", response_model=ImagesResponse)
    async def vae_reconstruct(self, body: ReconstructRequest) -> ImagesResponse:
        async with self._observe("/v1/vae/reconstruct") as rec:
            name, model = self._route(body.model, ("vae",), rec)
            card = self.cards[name]
            arrays = [_decode(b, card, f"images[{i}]") for i, b in enumerate(body.images)]
            images = await model.reconstruct(arrays)
            _record_images(rec, images)
        return _images_response(rec, images)

    @app.post("/v1/vae/interpolate", response_model=ImagesResponse)
    async def vae_interpolate(self, body: InterpolateRequest) -> ImagesResponse:
        async with self._observe("/v1/vae/interpolate") as rec:
            name, model = self._route(body.model, ("vae",), rec)
            rec["params"] = {"steps": body.steps}
            card = self.cards[name]
            a, b = _decode(body.image_a, card, "image_a"), _decode(body.image_b, card, "image_b")
            images = await model.interpolate(a, b, body.steps)
            _record_images(rec, images)
        return _images_response(rec, images)


# Serve settings that cut per-request overhead (FACTS.md: up to 257 against 185 req/s at
# c=32 for a tiny model): user code runs on the replica's own event loop. Every handler
# here awaits (model work runs in threads), so nothing blocks that loop.
REPLICA_ENV = {"RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0"}


def build_app(spec: ServeSpec, checkpoints: list[str | Path], config_file: str | None = None):
    """One gateway deployment (FastAPI ingress) holding every checkpoint, each named by its
    meta.json ``name``; autoscaled by ``spec.autoscaling``. API keys are read here, where the
    application is built (``spec.api_keys_env`` / ``spec.api_keys_file``), so every way of
    starting it enforces them; replicas get only the keys' digests.

    The checkpoints travel in the deployment's ``user_config`` (as given, made absolute, so
    a ``latest`` link is re-resolved when watched): changing only them is an in-place
    update. With ``spec.watch``, replicas poll them, and ``config_file`` (the serve config
    they came from) for an edited list (:mod:`genai.serve.registry`)."""
    if not checkpoints:
        raise ValueError("no checkpoints to serve")
    names: dict[str, str] = {}
    for path in checkpoints:
        directory = resolve(path)
        meta = read_meta(directory)
        get_family(meta.family)  # an unknown family fails here, not in the replica
        if meta.name in names:
            raise ValueError(f"two checkpoints are named {meta.name!r}; model ids must be unique")
        names[meta.name] = str(Path(path).expanduser().absolute())
    a = spec.autoscaling
    options = {
        "ray_actor_options": {
            "num_cpus": spec.num_cpus,
            "num_gpus": spec.num_gpus,
            "runtime_env": {"env_vars": REPLICA_ENV},
        },
        "max_ongoing_requests": spec.max_ongoing_requests,
        "user_config": {"checkpoints": list(names.values())},
        "autoscaling_config": {
            "min_replicas": a.min_replicas,
            "initial_replicas": max(1, a.min_replicas),
            "max_replicas": a.max_replicas,
            "target_ongoing_requests": a.target_ongoing_requests,
            "upscale_delay_s": a.upscale_delay_s,
            "downscale_delay_s": a.downscale_delay_s,
            "look_back_period_s": a.look_back_period_s,
        },
    }
    configured = keys.load_keys(spec.api_keys_env, spec.api_keys_file, spec.requests_per_minute)
    dumped = spec.model_dump(mode="json", exclude={"checkpoints"})
    # relative to where the application is built, like the checkpoints
    dumped["generation_log"]["dir"] = str(Path(spec.generation_log.dir).expanduser().absolute())
    settings = {
        "spec": dumped,
        "keys": keys.to_settings(configured),
        "config_file": str(Path(config_file).absolute()) if config_file else None,
        "base": os.getcwd(),  # relative paths in config_file are relative to here
    }
    return Gateway.options(name="genai", **options).bind(settings)


class AppArgs(ServeSpec):
    """Arguments of :func:`app_builder`: every serve-config field, plus ``config``, a serve
    YAML that the other arguments override. Unknown fields are errors."""

    config: str | None = None


def app_builder(args: AppArgs):
    """The application for Ray Serve's own config files and CLI (``serve run`` /
    ``serve deploy`` / KubeRay's RayService), with typed args::

        import_path: genai.serve.app:app_builder
        args: {config: serve/lm.yaml, checkpoints: [/abs/path/runs/lm-tiny/checkpoints/latest]}

    ``genai serve`` builds the same application (:func:`build_app`). ``host`` and ``port``
    are the Serve config's ``http_options`` there, not arguments of the application.
    """
    from genai.config import load_serve

    overrides = args.model_dump(mode="json", exclude_unset=True, exclude={"config"})
    base = load_serve(args.config).model_dump(mode="json") if args.config else {}
    spec = ServeSpec.model_validate(_merge(base, overrides))
    if not spec.checkpoints:
        raise ValueError("app_builder: args.checkpoints is empty (or set it in args.config)")
    listed_in_config = args.config is not None and "checkpoints" not in overrides
    return build_app(spec, spec.checkpoints, args.config if listed_in_config else None)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out
