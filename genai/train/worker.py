"""What a family's task uses on a Ray Train worker: metric means over the workers, whole
parameters under ZeRO-3, and the driver's arrays from the object store.

The contract a task meets is :class:`genai.families.contract.Task`.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any

import numpy as np
import ray
import torch
import torch.distributed as dist

from genai.train.engine import Engine


def all_mean(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """Means over all workers of named scalars, in one all-reduce (not one per metric)."""
    if not dist.is_initialized():
        return dict(values)
    t = torch.tensor(list(values.values()), dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return dict(zip(values, (t / dist.get_world_size()).tolist(), strict=True))


def full_params(engine: Engine):
    """Call module methods other than forward with whole parameters: under ZeRO-3 they are
    partitioned, and GatheredParameters materialises them (read-only; every rank must enter)."""
    if engine.zero_stage < 3:
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(list(engine.module.parameters()))


def get_ref(ref: Any) -> Any:
    """Arrays arrive as object-store refs from the driver (or as themselves, in tests)."""
    return ray.get(ref) if isinstance(ref, ray.ObjectRef) else ref


def readonly_tensor(array: np.ndarray) -> torch.Tensor:
    # Object-store arrays are read-only views of shared memory; we only ever index them,
    # so share rather than copy (torch warns about non-writable arrays regardless).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(np.asarray(array))


def tensor_or_none(ref: Any) -> torch.Tensor | None:
    return None if ref is None else readonly_tensor(get_ref(ref))
