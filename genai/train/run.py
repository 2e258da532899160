"""The driver side of ``genai train``, in three steps a Tune trial reuses:

1. ``prepare(spec)``: the family's driver-side data, into the object store;
2. ``build_trainer(spec, data, root)``: a ``TorchTrainer`` running ``train_loop_per_worker``;
3. ``fit(trainer, root)``: run it, return the committed checkpoint.

``train()`` is those three plus the checkpoint-directory policy (``--resume``/``--fresh``).
"""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ray.train import FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from genai import checkpoint as ckpt
from genai import cluster, timeline
from genai.config import JobSpec, SpecError
from genai.data.batches import check_items
from genai.families import get_family


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """The worker function, importing the training loop (DeepSpeed, the family's task) only
    in the worker: the driver never runs them, and importing DeepSpeed costs seconds."""
    timeline.mark("worker function entered")
    from genai.train.loop import train_loop_per_worker as loop

    timeline.mark("worker imports done")
    loop(config)


def prepare(spec: JobSpec, log=print) -> dict[str, Any]:
    """The family's driver-side data preparation; needs a connected Ray (``ray.put``)."""
    return get_family(spec.model.family).load_prepare()(spec, log)


def check_fits(spec: JobSpec, data: dict[str, Any]) -> None:
    """What the prepared data can tell before any worker starts: a batch larger than the
    training set is a one-line spec error here, not a failed worker group."""
    if data.get("n_train_items") is not None:
        check_items(data["n_train_items"], spec.train.micro_batch_size, spec.scaling.num_workers)


def build_trainer(
    spec: JobSpec,
    data: dict[str, Any],
    root: Path,
    *,
    resume_from: Path | None = None,
    callbacks: Sequence[Any] = (),
    storage_path: Path | None = None,
    t_submit: float | None = None,
    stop_at: int | None = None,
    run_id: str | None = None,
) -> TorchTrainer:
    """A ``TorchTrainer`` that trains ``spec`` and commits checkpoints under ``root``;
    ``stop_at`` ends the run early (a segment) without changing the LR schedule.
    ``run_id`` continues a training run (``--resume``); a new one is drawn otherwise."""
    run_id = run_id or uuid.uuid4().hex[:8]
    config = {
        "spec": spec.model_dump(mode="json"),
        "data": data,
        "checkpoint_root": str(root),
        "resume_from": str(resume_from) if resume_from else None,
        "run_id": run_id,
        "t_submit": t_submit or time.time(),
        "stop_at": stop_at,
    }
    sc = spec.scaling
    resources = {"CPU": sc.cpus_per_worker, **sc.resources_per_worker}
    if sc.use_gpu:
        resources["GPU"] = 1
    # min_workers: elastic, the worker group restarts on whatever fits (down to min_workers)
    # after a node is lost, and grows back when it returns; otherwise it waits for it
    workers: Any = sc.num_workers if sc.min_workers is None else (sc.min_workers, sc.num_workers)
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config=config,
        scaling_config=ScalingConfig(
            num_workers=workers, use_gpu=sc.use_gpu, resources_per_worker=resources
        ),
        run_config=RunConfig(
            # unique per trainer: Ray Train V2 would restore its own state from a run
            # directory of the same name, and genai resumes from its checkpoints instead
            name=f"{spec.name}-{run_id}-{uuid.uuid4().hex[:6]}",
            storage_path=str(storage_path or root.parent / "ray"),
            # a dead worker (or node) restarts the worker group, which resumes from the run's
            # latest committed checkpoint (loop.py)
            failure_config=FailureConfig(max_failures=spec.train.max_failures),
            callbacks=list(callbacks),
        ),
    )


def fit(trainer: TorchTrainer, root: Path) -> Path:
    """Run the trainer; returns the latest committed checkpoint under ``root``."""
    timeline.mark("fit called")
    try:
        trainer.fit()
    except (KeyboardInterrupt, SystemExit):
        # Ray Train's own SIGINT handler aborts the run gracefully and then exits;
        # say where the user can pick up again instead of exiting silently.
        latest = ckpt.find_latest(root)
        where = f"latest checkpoint {latest}" if latest else "no checkpoint was committed"
        raise KeyboardInterrupt(f"training interrupted; {where}; continue with --resume") from None
    final = ckpt.find_latest(root)
    if final is None:
        raise ckpt.CheckpointError(
            f"training finished but no checkpoint was committed under {root}"
        )
    return final


def train(
    spec: JobSpec,
    *,
    address: str | None = None,
    resume: bool = False,
    fresh: bool = False,
    log=print,
) -> Path:
    """Run the job to ``train.max_steps``; returns the final checkpoint directory."""
    t_submit = time.time()
    root = spec.checkpoint_dir
    latest = ckpt.find_latest(root)
    resume_from, run_id = None, None
    if resume:
        if latest is None:
            log(f"resume: no checkpoint under {root}; starting at step 0")
        else:
            step = ckpt.read_meta(latest).step
            if step >= spec.train.max_steps:
                log(
                    f"resume: {latest} is at step {step} >= train.max_steps ({spec.train.max_steps}); nothing to do"
                )
                return latest
            # a resumed run is the same training run: its checkpoints keep its run id
            resume_from, run_id = latest, ckpt.read_meta(latest).run_id or None
    elif latest is not None:
        if not fresh:
            raise SpecError(
                f"checkpoint.dir {root} already holds checkpoints: pass --resume to continue "
                "or --fresh to delete them and start over"
            )
        shutil.rmtree(root)
    ckpt.clean_staging(root)
    root.mkdir(parents=True, exist_ok=True)

    with cluster.connect(address):
        timeline.mark("ray up")
        data = prepare(spec, log)
        check_fits(spec, data)
        timeline.mark("data ready")
        trainer = build_trainer(
            spec, data, root, resume_from=resume_from, t_submit=t_submit, run_id=run_id
        )
        log(
            f"train: {spec.name} on {spec.scaling.num_workers} worker(s), "
            f"{'GPU' if spec.scaling.use_gpu else 'CPU'}, to step {spec.train.max_steps}"
        )
        try:
            return fit(trainer, root)
        except KeyboardInterrupt:
            _remove_placement_groups_of_this_job()
            raise


def _remove_placement_groups_of_this_job() -> None:
    """Ray Train keeps its worker group's placement group alive on its own (detached) and
    removes it when the run ends or its controller dies. A run aborted while the worker
    group is starting (Ctrl-C, or `genai jobs stop` early in a run) was seen to leave it
    behind, holding the workers' CPUs, so that the next run on the cluster could not
    start. The driver of `genai train` owns nothing else: what its job still holds goes."""
    import ray
    from ray._raylet import PlacementGroupID
    from ray.util.placement_group import PlacementGroup, remove_placement_group
    from ray.util.state import list_placement_groups

    try:
        job = ray.get_runtime_context().get_job_id()
        groups = list_placement_groups(filters=[("creator_job_id", "=", job)], timeout=10)
        for group in groups:
            if group.state != "REMOVED":
                remove_placement_group(
                    PlacementGroup(PlacementGroupID.from_hex(group.placement_group_id))
                )
    except Exception:  # the state API unreachable or Ray going down: nothing more to do here
        pass
