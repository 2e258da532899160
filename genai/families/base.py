"""What a model family is: one registered unit (torchtitan's ModelSpec, for genai).

Everything family-specific hangs off a :class:`Family`: its spec sections, the
driver-side data preparation, the training task, the serving side, and
the metric a sweep optimises by default. Heavy parts are named as
``"module:attribute"`` and imported on first use, so that ``genai.config`` and
``genai.serve`` can read the registry without importing training code
(DeepSpeed) or serving code (Ray Serve) they do not need.
"""

from __future__ import annotations

import fnmatch
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, cast

from pydantic import BaseModel

from genai.serve.api import Route
from genai.specbase import Section

if TYPE_CHECKING:
    from genai.families.contract import Prepare, ServerFactory, TaskFactory


def load_attr(target: str) -> Any:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


@dataclass(frozen=True)
class Family:
    name: str
    model_spec: type[Section]
    """the ``model:`` section; its ``family`` field is the discriminator"""
    data_spec: type[Section]
    """the ``data:`` section; its ``kind`` field is the discriminator"""
    objective: tuple[str, Literal["min", "max"]]
    """the metric a sweep optimises unless told otherwise, and its direction"""
    metrics: tuple[str, ...]
    """metric names (fnmatch patterns) evaluations report: what a sweep may optimise"""
    lr_keys: tuple[str, ...]
    """the dotted keys that are learning rates (PBT perturbs these by default)"""
    prepare: str
    """driver side, a :class:`~genai.families.contract.Prepare`: the job's data for the
    workers (Ray connected)"""
    task: str
    """worker side, a :class:`~genai.families.contract.TaskFactory`"""
    server: str
    """serving side, a :class:`~genai.families.contract.ServerFactory`: the object a model
    replica holds per checkpoint"""
    section: type[Section] | None = None
    """the family's own top-level section (``gan:``, ``vae:``), if it has one"""
    check: Callable[[Any], None] | None = field(default=None, repr=False)
    """cross-section rules for a whole ``JobSpec``; raise ValueError naming the key"""
    # ---- serving: what the family adds to the HTTP application (genai/serve/api.py)
    routes: tuple[Route, ...] = ()
    """its HTTP routes; families that share one list the same Route"""
    card_fields: type[BaseModel] | None = None
    """fields its servers' ``info()`` adds to the model card (``GET /v1/models``)"""
    log_fields: type[BaseModel] | None = None
    """columns its routes add to the generation log (set on the request's record)"""
    serve_section: tuple[str, type[Section]] | None = None
    """its section of the serve spec (``lm: {max_batch_size: ...}``), if it has one"""

    def knows_metric(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.metrics)

    def load_prepare(self) -> Prepare:
        return cast("Prepare", load_attr(self.prepare))

    def load_task(self) -> TaskFactory:
        return cast("TaskFactory", load_attr(self.task))

    def load_server(self) -> ServerFactory:
        return cast("ServerFactory", load_attr(self.server))
