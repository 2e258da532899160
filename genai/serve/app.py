"""The Serve application: a FastAPI gateway in front of the model deployment.

This file holds the shared routes (health, ``/v1/models``, feedback), every family's
routes (:mod:`genai.serve.api`) and the building of the application. The gateway
authenticates (:mod:`.middleware`), validates, counts, logs and formats (:mod:`.openai`);
the model replicas (:mod:`genai.serve.models`) hold the checkpoints and do the work. The gateway
calls them through a Serve handle and retries a call whose replica died before it
produced anything, so a lost replica costs no request.

Errors are JSON in OpenAI's shape, ``{"error": {"message", "type", "param"}}``,
name the field and never echo the request body; malformed input never reaches a model
replica.
"""

# No `from __future__ import annotations` here: Serve wraps the ingress methods, and
# FastAPI then cannot resolve string annotations (the body became a query parameter).
import asyncio
import contextlib
import inspect
import os
import re
import time
import uuid
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.responses import HTMLResponse
from ray import serve
from ray.exceptions import RayActorError
from ray.serve.handle import DeploymentHandle

from genai.checkpoint import is_adapter, read_meta, resolve
from genai.families import get_family
from genai.families.base import load_attr

# modules, not their names: this file's classes are pickled by value (a ContextVar cannot be)
from genai.serve import book, genlog, keys, metrics
from genai.serve import routes as surface
from genai.serve.api import Route, count
from genai.serve.errors import APIError
from genai.serve.middleware import LimitsAndAuth
from genai.serve.models import Models
from genai.serve.openai import install_error_handlers
from genai.serve.schemas import (
    AdapterRequest,
    FeedbackResponse,
    feedback_request,
    model_card,
    model_list,
)
from genai.serve.spec import ServeSpec
from genai.specio import deep_merge

app = FastAPI(
    title="genai",
    description="Every registered family's routes over genai checkpoints (OpenAI-style API)",
)
ModelCard = model_card(surface.card_fields())
ModelList = model_list(ModelCard)
ID_PREFIX = surface.id_prefixes()
FeedbackRequest = feedback_request(ID_PREFIX.values())
GENERATIONS = genlog.generations_schema(surface.log_fields())
install_error_handlers(app)
app.add_middleware(LimitsAndAuth)


PLAYGROUND = (Path(__file__).parent / "playground.html").read_text(encoding="utf-8")
# its one inline script and style; images are data: URLs, audio blob: URLs; it talks only
# to this origin
_PLAYGROUND_CSP = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "img-src data:; media-src blob:; connect-src 'self'"
)


# Helpers and family routes live above the Gateway: Serve pickles the decorated class (and
# the app) by value when it is defined, and what is added after would be missing in the replica.
def _refused(out: Any) -> Any:
    """A model replica's answer; its ``{"error": ...}`` for a bad request is raised here."""
    if isinstance(out, dict) and "error" in out:
        e = out["error"]
        raise APIError(e["status"], e["message"], e["param"], e["kind"])
    return out


def _family_endpoint(route: Route):
    """A POST endpoint for a family's route: FastAPI validates ``route.request`` (its
    signature is set below, as FastAPI reads it), and the route's gateway handler answers
    with the Gateway replica as its :class:`~genai.serve.api.GatewayCalls`."""

    async def endpoint(request: Request, body: Any) -> Any:
        gateway = request.app.state.gateway
        return await load_attr(route.gateway)(gateway, route, body)

    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    endpoint.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [
            inspect.Parameter("request", kind, annotation=Request),
            inspect.Parameter("body", kind, annotation=route.request),
        ]
    )
    return endpoint


for _route in surface.routes().values():
    app.add_api_route(
        _route.path,
        _family_endpoint(_route),
        methods=["POST"],
        response_model=_route.response,
        summary=_route.summary or None,
        name=_route.path.strip("/").replace("/", "_"),
    )


@serve.deployment
@serve.ingress(app)
class Gateway:
    """The HTTP ingress: keys and limits, validation, metrics, the generation log, and
    retries of model calls whose replica died before answering."""

    def __init__(self, models: DeploymentHandle, settings: dict[str, Any]) -> None:
        spec = ServeSpec.model_validate(settings["spec"])
        self.models = models
        self.book = book.book(settings["app_id"])
        self.retries = spec.gateway.retries
        app.state.max_body_bytes = spec.max_body_bytes
        app.state.keys = keys.KeyRing(settings["keys"])
        app.state.gateway = self  # the family routes' GatewayCalls
        replica = serve.get_replica_context().replica_id.unique_id
        self.replica = replica
        log_spec = spec.generation_log
        self.genlog = (
            None if log_spec.mode == "off" else genlog.GenerationLog(log_spec, replica, GENERATIONS)
        )

    def __del__(self) -> None:
        if getattr(self, "genlog", None) is not None:
            self.genlog.close()  # completes the open Parquet file

    async def _backoff(self, attempt: int, what: str, exc: BaseException) -> None:
        """After a model replica died under a call: wait, or give up with a 503."""
        if attempt >= self.retries:
            raise APIError(
                503,
                f"no model replica could answer ({attempt + 1} tries; last: {type(exc).__name__})",
                None,
                "server_error",
            ) from None
        count(metrics.retries_total(), 1, {"call": what})
        await asyncio.sleep(min(2.0, 0.1 * 2**attempt))

    async def _call(self, method: str, *args: Any) -> Any:
        """A model-replica call; one whose replica died (no output yet) is retried on
        another, with backoff, up to ``gateway.retries`` times."""
        for attempt in range(self.retries + 1):
            try:
                return _refused(await getattr(self.models, method).remote(*args))
            except RayActorError as exc:
                await self._backoff(attempt, method, exc)
        raise AssertionError("unreachable")

    async def call(self, route: Route, body: dict[str, Any], key: str) -> dict[str, Any]:
        return await self._call("handle", route.path, body, key, keys.current_scope.get())

    async def open_stream(
        self, route: Route, body: dict[str, Any], key: str
    ) -> tuple[Any, dict[str, Any]]:
        """A model-replica stream, opened: its first event has arrived (bad requests fail
        here, before any byte is sent). A replica that died before it is retried."""
        for attempt in range(self.retries + 1):
            gen = self.models.options(stream=True).stream.remote(
                route.path, body, key, keys.current_scope.get()
            )
            try:
                first = _refused(await gen.__anext__())
                return gen, first["opened"]
            except RayActorError as exc:
                await self._backoff(attempt, "stream", exc)
        raise AssertionError("unreachable")

    @contextlib.asynccontextmanager
    async def observe(self, route: str, rec: dict[str, Any] | None = None, opens: bool = False):
        """Count, time and log one request. ``opens``: the request goes on as a stream,
        whose own ``observe`` (with the same record) finishes it unless opening failed."""
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
                self._finish(rec, rec.pop("failed", status))

    def _finish(self, rec: dict[str, Any], status: int) -> None:
        rec["status"], rec["latency_s"] = status, time.perf_counter() - rec["t0"]
        # a model label is a served model's name, never the client's text: Ray's metrics
        # reject non-ASCII values, and labels must stay few
        tags = {"route": rec["route"], "model": rec.get("model") or ""}
        metrics.requests_total().inc(tags={**tags, "status": str(status), "key": rec["key"]})
        metrics.request_latency_s().observe(rec["latency_s"], tags=tags)
        if self.genlog is not None:
            self.genlog.record(rec)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def playground(self) -> HTMLResponse:
        """The playground: a static page that calls this API with the key typed into it."""
        return HTMLResponse(PLAYGROUND, headers={"Content-Security-Policy": _PLAYGROUND_CSP})

    @app.get("/healthz")
    async def healthz(self) -> dict[str, Any]:
        """The gateway's replica, and one model replica's view (models, decoders, swaps)."""
        return {"status": "ok", "gateway": self.replica, **(await self._call("health"))}

    @app.get("/v1/models", response_model=ModelList)
    async def list_models(self) -> ModelList:
        """The served models this request's key may use."""
        allowed = keys.current_scope.get()
        cards = [c for c in await self._call("cards") if keys.allows(allowed, c["id"])]
        return ModelList(data=[ModelCard(**c) for c in cards])

    @app.post("/v1/adapters", response_model=ModelCard, status_code=201)
    async def add_adapter(self, body: AdapterRequest) -> ModelCard:
        """Serve a LoRA adapter checkpoint over its base (which must be served: checked by
        the sha256 of its weights), as model ``name``, on every model replica: this one
        at once, the others within a second."""
        checked = await self._call("check_adapter", body.name, body.path)
        await self.book.put.remote(body.name, checked["directory"])
        await self._call("sync_adapters")
        cards = {c["id"]: c for c in await self._call("cards")}
        if body.name not in cards:
            health = await self._call("health")
            why = health["refused"].get(checked["directory"], "see /healthz")
            await self.book.remove.remote(body.name)
            await self._call("sync_adapters")
            raise APIError(422, f"adapter {body.name!r} failed to load: {why}", "path")
        return ModelCard(**cards[body.name])

    @app.delete("/v1/adapters/{name}")
    async def remove_adapter(self, name: str) -> dict[str, Any]:
        """Stop serving an adapter added with ``POST /v1/adapters`` (requests using it
        finish first)."""
        if not await self.book.remove.remote(name):
            raise APIError(
                404,
                f"adapter {name!r} was not added with POST /v1/adapters (adapters listed in "
                "the serve config are removed from it)",
                "name",
                "not_found",
            )
        await self._call("sync_adapters")
        return {"id": name, "object": "model", "deleted": True}

    @app.get("/v1/generations")
    async def generations(
        self,
        limit: int = Query(20, ge=1, le=500),
        model: str | None = None,
        key: str | None = None,
    ) -> dict[str, Any]:
        """The newest logged generations of the calling key (with its feedback scores);
        an ``admin`` key (or an open API) reads every key's, or ``key``'s."""
        if self.genlog is None:
            raise APIError(409, "the generation log is off on this deployment", None)
        ring: keys.KeyRing = app.state.keys
        caller = keys.current_key.get()
        admin = not ring or ring.by_name[caller].may("admin")
        if key is not None and key != caller and not admin:
            raise APIError(
                403,
                ring.by_name[caller].refusal("admin") + ": other keys' generations",
                "key",
                "permission_error",
            )
        who = key if admin else caller
        rows = await asyncio.to_thread(
            genlog.recent, self.genlog.dir, limit, model, who, self.genlog.cipher
        )
        return {"object": "list", "data": rows}

    @app.post("/v1/feedback", response_model=FeedbackResponse)
    async def feedback(self, body: FeedbackRequest) -> FeedbackResponse:
        """A score for a logged request (joined to it by ``genai generations``)."""
        if self.genlog is None:
            raise APIError(
                409, "the generation log is off on this deployment: feedback is not kept", "id"
            )
        self.genlog.score(body.id, body.score, body.comment, keys.current_key.get())
        return FeedbackResponse(id=body.id, score=body.score, comment=body.comment)


# Serve settings that cut per-request overhead (a thread hop per request; see the README's
# serving benchmark): user code runs on the replica's own event loop. Every handler
# here awaits (model work runs in threads), so nothing blocks that loop.
REPLICA_ENV = {"RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0"}


def build_app(spec: ServeSpec, checkpoints: list[str | Path], config_file: str | None = None):
    """The application: the ``gateway`` deployment (FastAPI ingress) in front of the
    ``models`` deployment, whose every replica holds every checkpoint, each named by its
    meta.json ``name``. Both autoscale by ``spec.autoscaling``. API keys are read here,
    where the application is built (``spec.api_keys_env`` / ``spec.api_keys_file``), so
    every way of starting it enforces them; replicas get only the keys' digests.

    The checkpoints travel in the models deployment's ``user_config`` (as given, made
    absolute, so a ``latest`` link is re-resolved when watched): changing only them is an
    in-place update. With ``spec.watch``, model replicas poll them, and ``config_file``
    (the serve config they came from) for an edited list (:mod:`genai.serve.registry`)."""
    names = _named_checkpoints(checkpoints)
    adapters = _named_adapters(spec.adapters, names)
    app_id = uuid.uuid4().hex[:12]  # names this deployment's adapter book
    autoscaling = _autoscaling(spec)
    configured = keys.load_keys(spec.api_keys_env, spec.api_keys_file, spec.requests_per_minute)
    dumped = spec.model_dump(mode="json", exclude={"checkpoints", "adapters"})
    # relative to where the application is built, like the checkpoints
    dumped["generation_log"]["dir"] = str(Path(spec.generation_log.dir).expanduser().absolute())
    models = Models.options(
        name="models",
        ray_actor_options={
            "num_cpus": spec.num_cpus,
            "num_gpus": spec.num_gpus,
            "runtime_env": {"env_vars": REPLICA_ENV},
        },
        max_ongoing_requests=spec.max_ongoing_requests,
        user_config={"checkpoints": list(names.values()), "adapters": adapters},
        # each request is already in the gateway's access log; one line per call here too
        # costs CPU on a busy replica
        logging_config={"enable_access_log": False},
        autoscaling_config=autoscaling,
    ).bind(
        {
            "spec": dumped,
            "config_file": str(Path(config_file).absolute()) if config_file else None,
            "base": os.getcwd(),  # relative paths in config_file are relative to here
            "app_id": app_id,
        }
    )
    g = spec.gateway
    return Gateway.options(
        name="gateway",
        ray_actor_options={"num_cpus": g.num_cpus, "runtime_env": {"env_vars": REPLICA_ENV}},
        max_ongoing_requests=g.max_ongoing_requests,
        autoscaling_config={**autoscaling, "target_ongoing_requests": g.target_ongoing_requests},
    ).bind(models, {"spec": dumped, "keys": keys.to_settings(configured), "app_id": app_id})


def _named_checkpoints(checkpoints: list[str | Path]) -> dict[str, str]:
    """Model id -> checkpoint path (absolute, as given); ids must be unique, families known."""
    if not checkpoints:
        raise ValueError("no checkpoints to serve")
    names: dict[str, str] = {}
    for path in checkpoints:
        meta = read_meta(resolve(path))
        get_family(meta.family)  # an unknown family fails here, not in the replica
        if meta.name in names:
            raise ValueError(f"two checkpoints are named {meta.name!r}; model ids must be unique")
        names[meta.name] = str(Path(path).expanduser().absolute())
    return names


def _named_adapters(adapters: dict[str, str], names: dict[str, str]) -> dict[str, str]:
    """Adapter model id -> its checkpoint path (absolute); each checked to be a LoRA
    adapter, named apart from the checkpoints. (Whether its base is served is checked where
    it loads, against the base's weights.)"""
    out: dict[str, str] = {}
    for name, path in adapters.items():
        if name in names:
            raise ValueError(f"adapters.{name}: a checkpoint is already served as {name!r}")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", name):
            raise ValueError(f"adapters.{name}: not a model id (letters, digits, . _ -)")
        if not is_adapter(resolve(path)):
            raise ValueError(f"adapters.{name}: {path} is not a LoRA adapter checkpoint")
        out[name] = str(Path(path).expanduser().absolute())
    return out


def _autoscaling(spec: ServeSpec) -> dict[str, Any]:
    a = spec.autoscaling
    return {
        "min_replicas": a.min_replicas,
        "initial_replicas": max(1, a.min_replicas),
        "max_replicas": a.max_replicas,
        "target_ongoing_requests": a.target_ongoing_requests,
        "upscale_delay_s": a.upscale_delay_s,
        "downscale_delay_s": a.downscale_delay_s,
        "look_back_period_s": a.look_back_period_s,
    }


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
    from genai.serve.spec import load_serve

    overrides = args.model_dump(mode="json", exclude_unset=True, exclude={"config"})
    base = load_serve(args.config).model_dump(mode="json") if args.config else {}
    spec = ServeSpec.model_validate(deep_merge(base, overrides))
    if not spec.checkpoints:
        raise ValueError("app_builder: args.checkpoints is empty (or set it in args.config)")
    listed_in_config = args.config is not None and "checkpoints" not in overrides
    return build_app(spec, spec.checkpoints, args.config if listed_in_config else None)
