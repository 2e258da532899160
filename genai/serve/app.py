"""The Serve application: a FastAPI gateway routing by ``model`` to one deployment per checkpoint.

Errors are JSON in OpenAI's shape, ``{"error": {"message", "type", "param"}}``,
name the field, never echo the request body, and never reach a model replica:
bad input is rejected at the gateway.
"""

# No `from __future__ import annotations` here: Serve wraps the ingress methods, and
# FastAPI then cannot resolve string annotations (the body became a query parameter).
import base64
import binascii
import contextlib
import io
import secrets
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.exceptions import HTTPException as StarletteHTTPException

from genai.checkpoint import read_meta, resolve
from genai.config import ServeSpec
from genai.families import get_family
from genai.families.lm.serving import PromptTooLong
from genai.serve import metrics
from genai.serve.schemas import (
    CompletionRequest,
    CompletionResponse,
    ImageGenerationRequest,
    ImagesResponse,
    InterpolateRequest,
    ModelCard,
    ModelList,
    ReconstructRequest,
)

app = FastAPI(title="genai", description="Completions from genai checkpoints (OpenAI-style API)")


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
    status: int, message: str, param: str | None = None, kind: str = "invalid_request_error"
) -> JSONResponse:
    return JSONResponse(
        status_code=status,
        content={"error": {"message": message, "type": kind, "param": param, "code": None}},
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
        None,
        "not_found" if exc.status_code == 404 else "http_error",
    )


@app.middleware("http")
async def _limits_and_auth(request: Request, call_next):
    state = request.app.state
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > state.max_body_bytes):
        return _error(413, f"request body exceeds {state.max_body_bytes} bytes", "body")
    if state.api_keys and request.url.path.startswith("/v1/"):
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not any(
            secrets.compare_digest(key, k) for k in state.api_keys
        ):
            return _error(
                401,
                "missing or invalid API key (Authorization: Bearer <key>)",
                None,
                "authentication_error",
            )
    if request.method == "POST" and not request.headers.get("content-type", "").startswith(
        "application/json"
    ):
        # `curl -d '{...}'` sends application/x-www-form-urlencoded; every body here is JSON
        headers = [(k, v) for k, v in request.scope["headers"] if k != b"content-type"]
        request.scope["headers"] = [*headers, (b"content-type", b"application/json")]
    return await call_next(request)


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


@serve.deployment(ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=64)
@serve.ingress(app)
class Gateway:
    def __init__(self, models: dict[str, DeploymentHandle], settings: dict[str, Any]) -> None:
        self.models = models
        self.max_tokens_limit = settings["max_tokens_limit"]
        app.state.max_body_bytes = settings["max_body_bytes"]
        app.state.api_keys = tuple(settings["api_keys"])
        self.cards: dict[str, dict[str, Any]] = {}

    async def _card(self, name: str) -> dict[str, Any]:
        if name not in self.cards:
            self.cards[name] = await self.models[name].info.remote()
        return self.cards[name]

    async def _route(
        self, model: str | None, families: tuple[str, ...]
    ) -> tuple[str, dict[str, Any]]:
        """The served model a request names (or the only one of the right family)."""
        if model is None:
            fitting = [
                n for n in sorted(self.models) if (await self._card(n))["family"] in families
            ]
            if len(fitting) == 1:
                return fitting[0], await self._card(fitting[0])
            raise APIError(
                422,
                f"model is required: {len(fitting)} {'/'.join(families)} models are served",
                "model",
            )
        if model not in self.models:
            raise APIError(
                404,
                f"model {model!r} is not served; GET /v1/models lists them",
                "model",
                "not_found",
            )
        card = await self._card(model)
        if card["family"] not in families:
            raise APIError(
                400,
                f"model {model!r} is a {card['family']} model; this route takes {'/'.join(families)}",
                "model",
            )
        return model, card

    @contextlib.asynccontextmanager
    async def _observe(self, route: str, model: str | None):
        t0, status = time.perf_counter(), "200"
        try:
            yield
        except APIError as exc:
            status = str(exc.status)
            raise
        except Exception:
            status = "500"
            raise
        finally:
            tags = {"route": route, "model": model or ""}
            metrics.requests_total().inc(tags={**tags, "status": status})
            metrics.request_latency_s().observe(time.perf_counter() - t0, tags=tags)

    @app.get("/healthz")
    async def healthz(self) -> dict[str, Any]:
        ctx = serve.get_replica_context()
        return {"status": "ok", "models": sorted(self.models), "replica": ctx.replica_id.unique_id}

    @app.get("/v1/models", response_model=ModelList)
    async def list_models(self) -> ModelList:
        return ModelList(data=[ModelCard(**await self._card(n)) for n in sorted(self.models)])

    @app.post("/v1/completions", response_model=CompletionResponse)
    async def completions(self, body: CompletionRequest) -> CompletionResponse:
        async with self._observe("/v1/completions", body.model):
            name, _ = await self._route(body.model, ("lm",))
            if body.max_tokens > self.max_tokens_limit:
                raise APIError(
                    422,
                    f"max_tokens must be <= {self.max_tokens_limit}, got {body.max_tokens}",
                    "max_tokens",
                )
            try:
                out = await self.models[name].complete.remote(body.model_dump())
            except PromptTooLong as exc:  # Ray re-raises the replica's error as a subclass of it
                raise APIError(400, str(getattr(exc, "cause", exc)), "max_tokens") from None
        return CompletionResponse(
            id=f"cmpl-{uuid.uuid4().hex[:24]}",
            created=int(time.time()),
            model=name,
            choices=[{"text": out["text"], "finish_reason": out["finish_reason"]}],
            usage={
                "prompt_tokens": out["prompt_tokens"],
                "completion_tokens": out["completion_tokens"],
                "total_tokens": out["prompt_tokens"] + out["completion_tokens"],
            },
        )

    @app.post("/v1/images/generations", response_model=ImagesResponse)
    async def image_generations(self, body: ImageGenerationRequest) -> ImagesResponse:
        async with self._observe("/v1/images/generations", body.model):
            name, card = await self._route(body.model, ("gan", "vae"))
            side = card["image_size"]
            if body.size is not None and body.size != f"{side}x{side}":
                raise APIError(
                    422, f"size must be {side}x{side} for model {name!r}, got {body.size!r}", "size"
                )
            label = _class_from_prompt(body.prompt, card) if card["conditional"] else None
            images = await self.models[name].generate.remote(
                {"n": body.n, "seed": body.seed, "label": label}
            )
        return ImagesResponse(created=int(time.time()), data=[{"b64_json": b} for b in images])

    @app.post("/v1/vae/reconstruct", response_model=ImagesResponse)
    async def vae_reconstruct(self, body: ReconstructRequest) -> ImagesResponse:
        async with self._observe("/v1/vae/reconstruct", body.model):
            name, card = await self._route(body.model, ("vae",))
            arrays = [_decode(b, card, f"images[{i}]") for i, b in enumerate(body.images)]
            images = await self.models[name].reconstruct.remote(arrays)
        return ImagesResponse(created=int(time.time()), data=[{"b64_json": b} for b in images])

    @app.post("/v1/vae/interpolate", response_model=ImagesResponse)
    async def vae_interpolate(self, body: InterpolateRequest) -> ImagesResponse:
        async with self._observe("/v1/vae/interpolate", body.model):
            name, card = await self._route(body.model, ("vae",))
            a, b = _decode(body.image_a, card, "image_a"), _decode(body.image_b, card, "image_b")
            images = await self.models[name].interpolate.remote(a, b, body.steps)
        return ImagesResponse(created=int(time.time()), data=[{"b64_json": b} for b in images])


def build_app(spec: ServeSpec, checkpoints: list[str | Path], api_keys: list[str] | None = None):
    """One deployment per checkpoint (named by its meta.json ``name``) behind one gateway."""
    if not checkpoints:
        raise ValueError("no checkpoints to serve")
    a = spec.autoscaling
    options = {
        "ray_actor_options": {"num_cpus": spec.num_cpus},
        "max_ongoing_requests": spec.max_ongoing_requests,
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
    models: dict[str, Any] = {}
    for path in checkpoints:
        directory = resolve(path)
        meta = read_meta(directory)
        if meta.name in models:
            raise ValueError(f"two checkpoints are named {meta.name!r}; model ids must be unique")
        family = get_family(meta.family)
        models[meta.name] = family.load("deployment")(directory, meta, spec, options)
    settings = {
        "max_tokens_limit": spec.max_tokens_limit,
        "max_body_bytes": spec.max_body_bytes,
        "api_keys": api_keys or [],
    }
    return Gateway.bind(models, settings)
