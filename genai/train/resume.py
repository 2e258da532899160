"""Where a worker group's start continues from, and how it gets there: the checkpoint to
load (its own newest after a failure, else what the driver named), the batch split for
this worker count, and the engines' state (re-sharded when the worker count changed)."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch.distributed as dist

from genai import checkpoint as ckpt
from genai.config import JobSpec
from genai.train import reshard


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def resume_source(config: dict[str, Any], root: Path) -> Path | None:
    """The checkpoint this start continues from. A restart after a failure finds this run's
    own checkpoints under ``root``; the newest wins over the driver's ``resume_from`` when it
    is strictly newer (a PBT trial's ``resume_from`` may be another trial's checkpoint at
    the same step as its own)."""
    asked = Path(config["resume_from"]) if config.get("resume_from") else None
    own = ckpt.latest_of_run(root, config["run_id"])
    if own is None:
        return asked
    if asked is None or ckpt.read_meta(own).step > ckpt.read_meta(asked).step:
        return own
    return asked


def fit_batch_to_world(
    spec: JobSpec, meta: ckpt.Meta | None, world: int, say: Callable[[str], None]
) -> JobSpec:
    """The spec with its per-worker batch split for ``world`` workers, keeping the run's
    global batch: the checkpoint's when resuming, else the spec's (at scaling.num_workers)."""
    if meta is not None:
        t = meta.spec["train"]
        global_batch = t["micro_batch_size"] * t["grad_accum_steps"] * meta.world_size
    else:
        global_batch = spec.global_batch
    t = spec.train
    if t.micro_batch_size * t.grad_accum_steps * world == global_batch:
        return spec
    micro, accum = reshard.split_batch(global_batch, world, t.micro_batch_size)
    say(
        f"{world} workers: micro-batch {micro} x {accum} accumulation steps keeps the global "
        f"batch at {global_batch}"
    )
    train = t.model_copy(update={"micro_batch_size": micro, "grad_accum_steps": accum})
    return spec.model_copy(update={"train": train})


def load_engines(
    engines: dict[str, Any],
    src: Path,
    meta: ckpt.Meta,
    root: Path,
    run_id: str,
    world: int,
    rank: int,
    say: Callable[[str], None],
) -> int:
    """Load every engine's state from checkpoint ``src``; returns its step. Saved on another
    worker count, partitioned state goes through DeepSpeed's universal format first."""
    tag = ckpt.step_name(meta.step)
    reshard_dir = root / f".reshard-{run_id}"
    universal = meta.world_size != world and any(
        reshard.needs_universal(src / ckpt.DS_DIR / name, tag) for name in engines
    )
    if universal:
        if rank == 0:
            t0 = time.perf_counter()
            for name in engines:
                reshard.to_universal(src / ckpt.DS_DIR / name, tag, reshard_dir / name)
            say(
                f"re-sharding {src.name} from {meta.world_size} to {world} workers "
                f"(DeepSpeed universal checkpoint, {time.perf_counter() - t0:.1f}s)"
            )
        barrier()
    try:
        where = reshard_dir if universal else src / ckpt.DS_DIR
        steps = {
            name: int(engine.load(where / name, tag=tag, universal=universal)["step"])
            for name, engine in engines.items()
        }
    finally:
        barrier()
        if universal and rank == 0:
            shutil.rmtree(reshard_dir, ignore_errors=True)
    if set(steps.values()) != {meta.step}:  # a GAN's two engines must resume together
        raise ckpt.CheckpointError(
            f"{src}: engines saved at steps {steps}, meta.json says {meta.step}"
        )
    return meta.step
