"""What a family's serving code uses: its routes, and the two sides that answer them.

A family lists :class:`Route` objects (``Family.routes``). The gateway (``serve/app.py``)
adds each as a ``POST`` endpoint that validates ``request`` and calls the route's
``gateway`` handler; the handler asks a model replica to do the work through
:class:`GatewayCalls`, and the replica runs the route's ``replica`` function with
:class:`ReplicaCalls`. Both handlers are ``"module:attribute"`` strings, imported in the
process that runs them: the gateway never imports model code, and this module imports
nothing heavy (family packages import it when the job spec is read).

Refuse a bad request by raising :class:`~genai.serve.errors.APIError` (status, message,
the field at fault) on either side: the client gets OpenAI's error shape naming it.

A family's server also uses :func:`base_card` (the card fields every model has),
:func:`current_key` (the API key name a request came with, to tag its metrics) and
:func:`count`; its metrics are its own ``ray.serve.metrics`` objects.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel

if TYPE_CHECKING:
    from pathlib import Path

    from genai.checkpoint import Meta
    from genai.families.contract import Server


@dataclass(frozen=True)
class Route:
    path: str
    """``/v1/...``; families that share a route list the same object"""
    request: type[BaseModel]
    response: type[BaseModel]
    id_prefix: str
    """the response id's prefix (``cmpl`` -> ``cmpl-<24 hex>``), also the generation log's id"""
    gateway: str
    """``async (calls: GatewayCalls, route: Route, body: request) -> response`` (or a
    ``StreamingResponse``), in the gateway replica"""
    replica: str
    """``async (calls: ReplicaCalls, route: Route, body: dict) -> dict`` in a model replica"""
    replica_stream: str | None = None
    """``async (calls: ReplicaCalls, route: Route, body: dict) -> AsyncIterator[dict]``: first
    ``{"opened": record fields}``, then the family's events; for routes that stream"""
    summary: str = ""
    answered_by: tuple[str, ...] = ()
    """families whose models answer this route too, though they do not list it (the audio
    family's speech route renders music an LM family model writes)"""


class GatewayCalls(Protocol):
    """The gateway's services for a route handler."""

    def observe(
        self, route: str, rec: dict[str, Any] | None = None, opens: bool = False
    ) -> AbstractAsyncContextManager[dict[str, Any]]:
        """Count, time and log one request; yields its generation-log record (``id``,
        ``time``, ``key`` ...), to which the handler adds the family's log fields.
        ``opens``: the request goes on as a stream, finished by the stream's own observe."""
        ...

    async def call(self, route: Route, body: dict[str, Any], key: str) -> dict[str, Any]:
        """The route's replica function on a model replica (retried on another if the
        replica died before answering)."""
        ...

    async def open_stream(
        self, route: Route, body: dict[str, Any], key: str
    ) -> tuple[AsyncIterator[dict[str, Any]], dict[str, Any]]:
        """The route's replica stream, opened (a bad request has failed by now): the
        iterator of the events after ``opened``, and what ``opened`` carried."""
        ...


class ReplicaCalls(Protocol):
    """A model replica's services for a route's replica function."""

    spec: Any
    """the ServeSpec the application was built with"""

    def resolve(self, model: str | None, route: Route) -> tuple[dict[str, Any], Server]:
        """The served model a request names (or the only one serving this route) and what
        the generation log records of it (``model``, ``step``, ``spec_hash``)."""
        ...

    def card(self, model: str) -> dict[str, Any]:
        """The model's card, as ``GET /v1/models`` shows it."""
        ...


def sse(payload: dict[str, Any] | str) -> str:
    """One server-sent event (``data: ...``) of a streamed response."""
    import json

    return f"data: {payload if isinstance(payload, str) else json.dumps(payload)}\n\n"


def base_card(directory: Path, meta: Meta) -> dict[str, Any]:
    """What every model card holds: ``id``, ``family``, ``step``, ``created`` and ``lineage``
    (the sweep and trial a promoted checkpoint came from; None for a plain training run)."""
    return {
        "id": meta.name,
        "family": meta.family,
        "step": meta.step,
        "created": int(directory.stat().st_mtime),
        "lineage": None if meta.lineage is None else meta.lineage.model_dump(mode="json"),
    }


def current_key() -> str:
    """The name of the API key the request being served came with ("" when keys are off)."""
    from genai.serve.keys import current_key as key

    return key.get()


def count(counter: Any, n: int, tags: dict[str, str]) -> None:
    """Add ``n`` to a ``ray.serve.metrics.Counter``; zero is skipped (Ray's ``Counter.inc``
    raises on it, and a completion whose first token is EOS has no completion tokens)."""
    if n > 0:
        counter.inc(n, tags=tags)
