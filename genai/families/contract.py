"""The parts a model family provides, as typed Protocols.

A :class:`~genai.families.base.Family` names each part as a ``"module:attribute"``
string, imported on first use; these Protocols say what the attribute must be. The type
checker (``make lint``) holds the built-in families and their callers to them, and a
family from another package can check itself the same way.

Where each part runs:

- :class:`Prepare` on the driver, once per run or sweep, with Ray connected: it turns the
  job's ``data:`` section into what every worker needs (large arrays as object refs);
- :class:`TaskFactory` on every Ray Train worker: a :class:`Task` owns its DeepSpeed
  engines, its data and its metrics, and the training loop only sequences it;
- :class:`ServerFactory` in a Serve model replica: a :class:`Server` holds one checkpoint
  and answers the family's routes (:mod:`genai.serve.api`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from genai.checkpoint import Meta
    from genai.config import JobSpec
    from genai.serve.spec import ServeSpec
    from genai.train.engine import Engine

Log = Callable[[str], None]


class Prepare(Protocol):
    """Driver side: the job's data, ready for the workers (``ray.put`` the big arrays)."""

    def __call__(self, spec: JobSpec, log: Log = ...) -> dict[str, Any]: ...


@runtime_checkable
class Task(Protocol):
    """Worker side: one rank's share of training. Every method is collective (all ranks
    call it in the same order) unless it says otherwise."""

    unit: str
    """what ``items_per_step`` counts (``tokens``); the throughput metric is ``<unit>_per_s``"""
    unit_label: str
    """the unit as the progress line shows it (``tok``/s)"""
    n_params: int

    @property
    def engines(self) -> dict[str, Engine]:
        """The DeepSpeed engines by name; each is checkpointed under its name."""
        ...

    @property
    def items_per_step(self) -> int:
        """Items (tokens, images ...) one optimizer step consumes over all workers."""
        ...

    @property
    def lr(self) -> float: ...

    def describe(self) -> str:
        """One line for the log: size and shape of the model."""
        ...

    def train_step(self, step: int) -> dict[str, float]:
        """One optimizer step; the losses, averaged over workers."""
        ...

    def evaluate(self) -> dict[str, float]:
        """Held-out metrics, averaged over workers (names from ``Family.metrics``)."""
        ...

    def pictures(self, directory: Path, step: int) -> list[Path]:
        """Pictures of the model's output written into the checkpoint being staged."""
        ...

    def export(self, directory: Path) -> dict[str, Any]:
        """Write the inference files (``model.safetensors``, configs) into ``directory``;
        return the family's record for ``meta.json``'s ``export``."""
        ...


class TaskFactory(Protocol):
    def __call__(self, spec: JobSpec, data: dict[str, Any], rank: int, world_size: int) -> Task: ...


@runtime_checkable
class Server(Protocol):
    """One served checkpoint in a model replica."""

    def info(self) -> dict[str, Any]:
        """The model card: ``id``, ``family``, ``step``, ``created``, ``lineage`` and the
        family's own card fields (``Family.card_fields``)."""
        ...

    def close(self) -> None:
        """Free what the server holds (threads, memory); it is not called again."""
        ...


class ServerFactory(Protocol):
    def __call__(self, directory: Path, meta: Meta, spec: ServeSpec) -> Server: ...
