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
from typing import Any, Literal

from genai.specbase import Section


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
    """driver side: ``prepare(spec, log) -> dict`` of data for the workers (Ray connected)"""
    task: str
    """worker side: ``Task(spec, data, rank, world_size)`` (see genai/train/tasks.py)"""
    server: str
    """serving: ``server(directory, meta, serve_spec) -> object`` held in the gateway replica
    (``info()``, ``close()`` and the family's request methods)"""
    section: type[Section] | None = None
    """the family's own top-level section (``gan:``, ``vae:``), if it has one"""
    check: Callable[[Any], None] | None = field(default=None, repr=False)
    """cross-section rules for a whole ``JobSpec``; raise ValueError naming the key"""

    def knows_metric(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.metrics)

    def load(self, part: Literal["prepare", "task", "server"]) -> Any:
        return load_attr(getattr(self, part))
