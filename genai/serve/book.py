"""Adapters added over HTTP (``POST /v1/adapters``), shared by every model replica.

A request reaches one gateway replica and one model replica; the adapters it adds must
reach every model replica, and replicas that autoscaling starts later. So the gateway
writes them here, in one small named actor per deployed application, and each model
replica polls its version (``genai.serve.models``) and applies a change through the same
path as a hot swap. Detached: it outlives whichever replica created it; named by the
application's build id, so a redeployed application starts with an empty book.
"""

from __future__ import annotations

from typing import Any

import ray

NAMESPACE = "genai"


@ray.remote(num_cpus=0)
class AdapterBook:
    def __init__(self) -> None:
        self.version = 0
        self.adapters: dict[str, str] = {}

    def put(self, name: str, path: str) -> int:
        self.adapters[name] = path
        self.version += 1
        return self.version

    def remove(self, name: str) -> bool:
        if self.adapters.pop(name, None) is None:
            return False
        self.version += 1
        return True

    def read(self) -> tuple[int, dict[str, str]]:
        return self.version, dict(self.adapters)


def book(app_id: str) -> Any:
    """The application's book, created on first use."""
    return AdapterBook.options(
        name=f"adapters-{app_id}", namespace=NAMESPACE, lifetime="detached", get_if_exists=True
    ).remote()
