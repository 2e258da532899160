"""A checkpoint of a running job: every rank writes its DeepSpeed shards into one staging
directory, the task exports its inference files and pictures, rank 0 writes ``meta.json``
and commits (:mod:`genai.checkpoint`)."""

from __future__ import annotations

import platform
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING

import ray
import torch

from genai import __version__
from genai import checkpoint as ckpt
from genai.pictures import save_curves
from genai.train.resume import barrier

if TYPE_CHECKING:
    from genai.train.loop import RunState


def save(run: RunState, step: int, metrics: dict[str, float]) -> Path:
    """Checkpoint ``step`` (a collective: every rank calls it); returns the committed dir."""
    spec, task = run.spec, run.task
    staging = ckpt.staging_dir(run.root, step, run.run_id)
    if run.rank == 0:
        staging.mkdir(parents=True, exist_ok=True)
    barrier()
    for name, engine in task.engines.items():
        engine.save(
            staging / ckpt.DS_DIR / name, tag=ckpt.step_name(step), client_state={"step": step}
        )
    export = task.export(staging)
    pictures = task.pictures(staging, step)
    barrier()
    if run.rank == 0:
        if run.curves:
            title = f"{spec.name} ({spec.model.family})"
            pictures.append(save_curves(run.curves, staging / "curves.png", title))
        _check_shared_storage(staging, run.world, spec.deepspeed.zero_stage)
        meta = ckpt.Meta(
            family=spec.model.family,
            name=spec.name,
            step=step,
            metrics=metrics,
            history=run.history,
            curves=run.curves,
            pictures=[p.name for p in pictures],
            spec=spec.model_dump(mode="json"),
            spec_hash=spec.spec_hash(),
            deepspeed_config={n: e.config for n, e in task.engines.items()},
            world_size=run.world,
            node_ids=run.node_ids,
            n_params=task.n_params,
            versions=_versions(),
            created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            export=export,
            run_id=run.run_id,
        )
        ckpt.write_meta(staging, meta)
        final = ckpt.commit(staging, run.root, step, spec.checkpoint.keep)
        run.say(f"checkpoint {final}")
        for name in sorted(p.name for p in pictures):
            run.say(f"  picture {final / name}")
    barrier()
    return run.root / ckpt.step_name(step)


def _check_shared_storage(staging: Path, world: int, zero_stage: int) -> None:
    # Under ZeRO >= 1 every rank writes optimizer shards; if some are missing here, the
    # ranks wrote to different filesystems (multi-node without shared checkpoint.dir).
    if zero_stage == 0 or world == 1:
        return
    shards = list(staging.rglob("*optim_states.pt"))
    ranks = {m.group(1) for p in shards if (m := re.search(r"zero_pp_rank_(\d+)_", p.name))}
    if len(ranks) < world:
        raise ckpt.CheckpointError(
            f"checkpoint {staging} has optimizer shards from {len(ranks)}/{world} ranks: "
            "checkpoint.dir must be on storage shared by all nodes"
        )


def _versions() -> dict[str, str]:
    # from the installed distributions' metadata: importing transformers only for its
    # version string cost the GAN and VAE workers seconds at every start
    from importlib.metadata import PackageNotFoundError, version

    def of(dist: str) -> str:
        try:
            return version(dist)
        except PackageNotFoundError:
            return "not installed"

    return {
        "genai": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "deepspeed": of("deepspeed"),
        "transformers": of("transformers"),
        "ray": ray.__version__,
    }
