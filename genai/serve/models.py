"""The model deployment: replicas that hold every served checkpoint and do the work.

The gateway (:mod:`genai.serve.app`) validates, authenticates, counts and logs; it calls
these replicas through a Serve handle, so that when one dies the gateway can retry the
request on another (it retries only what has produced no output yet). Everything here
takes already-validated request fields; what depends on the model (which model, and
what the family's replica function checks against it) is checked here; a bad request
gets ``{"error": {status, message, param, kind}}`` back, which the gateway turns into
its JSON error naming the field.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import Any

from ray import serve

from genai.checkpoint import CheckpointError, is_adapter, read_meta, resolve
from genai.families.base import load_attr
from genai.serve import book, keys, registry
from genai.serve.api import Route
from genai.serve.errors import APIError
from genai.serve.routes import families_of, route_at
from genai.serve.spec import ServeSpec


@serve.deployment
class Models:
    """Every served model, by name (:class:`~genai.serve.registry.Registry`), each held by
    its family's server. Checkpoints come in the ``user_config`` (``reconfigure``: an
    in-place update) and, with ``watch``, from the watched paths. A request runs its
    route's replica function (:mod:`genai.serve.api`) with this replica as its
    :class:`~genai.serve.api.ReplicaCalls`."""

    def __init__(self, settings: dict[str, Any]) -> None:
        spec = ServeSpec.model_validate(settings["spec"])
        self.spec = spec
        self.registry = registry.Registry(spec)
        self.watching = spec.watch
        self.watch = (spec.watch_interval_s, settings.get("config_file"), settings.get("base"))
        self.book = book.book(settings["app_id"])
        self.book_version = 0

    async def reconfigure(self, config: dict[str, Any]) -> None:
        sources = registry.entries(config["checkpoints"], config.get("adapters"))
        if not self.registry.served:
            await asyncio.to_thread(self.registry.load_all, sources)
            if self.watching:
                self.registry.watch(*self.watch)
            threading.Thread(target=self._follow_book, name="adapter-book", daemon=True).start()
        else:
            await asyncio.to_thread(self.registry.apply, sources)
        await asyncio.to_thread(self.sync_adapters)

    # ------------------------------------------------------------------ adapters over HTTP

    def sync_adapters(self) -> int:
        """Apply the adapter book (genai/serve/book.py) if it changed; its version."""
        import ray

        version, added = ray.get(self.book.read.remote())
        if version != self.book_version:
            self.registry.apply_added(added)
            self.book_version = version
        return version

    def _follow_book(self) -> None:
        while not self.registry.closed:
            try:
                self.sync_adapters()
            except Exception:  # the book's node may be gone for a moment
                registry.log.exception("genai: reading the adapter book failed")
            self.registry.wait(1.0)

    def check_adapter(self, name: str, path: str) -> dict[str, Any]:
        """What ``POST /v1/adapters`` checks before the book takes an adapter: a LoRA
        checkpoint, a free model id, and its base served (by its weights' sha256)."""
        try:
            directory = resolve(path)
            meta = read_meta(directory)
        except CheckpointError as exc:
            return _refusal(APIError(404, str(exc), "path", "not_found"))
        except (OSError, ValueError) as exc:  # unreadable, or no path at all (a NUL byte)
            return _refusal(APIError(400, f"path: {type(exc).__name__}: {exc}"[:300], "path"))
        if not is_adapter(directory):
            return _refusal(APIError(400, f"{path} is not a LoRA adapter checkpoint", "path"))
        current = self.registry.served.get(name)
        if current is not None and not current.named:
            return _refusal(APIError(409, f"model {name!r} is served, not an adapter", "name"))
        if name in {n for n, _ in self.registry.configured if n}:
            return _refusal(
                APIError(409, f"adapter {name!r} is in the serve config: change it there", "name")
            )
        base = meta.export.get("base") or {}
        bases: dict[str, str] = {
            str(c["weights_sha256"]): n
            for n, c in self.registry.cards.items()
            if c.get("weights_sha256")
        }
        if base.get("sha256") not in bases:
            served = ", ".join(f"{n} ({sha[:12]})" for sha, n in bases.items()) or "none"
            return _refusal(
                APIError(
                    409,
                    f"adapter {path} was trained over {base.get('name')!r} (weights sha256 "
                    f"{str(base.get('sha256'))[:12]}); no served model has those weights "
                    f"(served bases: {served})",
                    "path",
                )
            )
        return {"base": bases[base["sha256"]], "directory": str(directory)}

    def __del__(self) -> None:
        if hasattr(self, "registry"):
            self.registry.close()

    # ------------------------------------------------------------------ what is served

    def cards(self) -> list[dict[str, Any]]:
        return [self.registry.cards[n] for n in sorted(self.registry.cards)]

    def health(self) -> dict[str, Any]:
        servers = self.registry.servers
        return {
            "models": sorted(servers),
            "replica": serve.get_replica_context().replica_id.unique_id,
            # per model whose server reports it (an LM: sequences decoding and waiting)
            "decoding": {n: m.health() for n, m in servers.items() if hasattr(m, "health")},
            # what each model is served from, and recent swaps and refused checkpoints
            **self.registry.health(),
        }

    def card(self, model: str) -> dict[str, Any]:
        return self.registry.cards[model]

    def resolve(self, model: str | None, route: Route) -> tuple[dict, Any]:
        """The served model a request names (or the only one of a family that serves the
        route), and what the generation log records of it (one snapshot: a swap may follow)."""
        families = families_of(route.path)
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
        allowed = keys.current_scope.get()
        if not keys.allows(allowed, model):  # before the 404: says nothing of other models
            raise APIError(
                403,
                keys.model_refusal(keys.current_key.get(), model, allowed),
                "model",
                "permission_error",
            )
        if model not in served:
            raise APIError(
                404,
                f"model {model!r} is not served; GET /v1/models lists them",
                "model",
                "not_found",
            )
        s = served[model]
        if s.family not in families:
            raise APIError(
                400,
                f"model {model!r} is a {s.family} model; this route takes {'/'.join(families)}",
                "model",
            )
        return {"model": model, "step": s.card["step"], "spec_hash": s.spec_hash}, s.server

    # ------------------------------------------------------------------ requests

    async def handle(
        self, path: str, body: dict[str, Any], key: str, models: tuple[str, ...] = ("*",)
    ) -> dict[str, Any]:
        """The route's replica function on an already-validated body; ``models``: the
        key's model globs."""
        keys.current_key.set(key)
        keys.current_scope.set(tuple(models))
        route = route_at(path)
        try:
            return await load_attr(route.replica)(self, route, body)
        except APIError as exc:
            return _refusal(exc)

    async def stream(
        self, path: str, body: dict[str, Any], key: str, models: tuple[str, ...] = ("*",)
    ) -> AsyncIterator[dict]:
        """First ``{"opened": ...}`` or ``{"error": ...}`` (so that a bad request fails
        before any output), then the route's events."""
        keys.current_key.set(key)
        keys.current_scope.set(tuple(models))
        route = route_at(path)
        assert route.replica_stream is not None, f"{path} does not stream"
        events = load_attr(route.replica_stream)(self, route, body)
        try:
            first = await events.__anext__()
        except APIError as exc:
            yield _refusal(exc)
            return
        yield first
        async for ev in events:
            yield ev


def _refusal(exc: APIError) -> dict[str, Any]:
    """A bad request, returned rather than raised: Serve logs every raised exception as a
    failed request, with a traceback, and a client's mistake is not the server's error."""
    return {
        "error": {
            "status": exc.status,
            "message": exc.message,
            "param": exc.param,
            "kind": exc.kind,
        }
    }
