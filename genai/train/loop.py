"""``train_loop_per_worker``: the recipe every Ray Train worker runs.

1. context and seeds; 2. data and engines (the task); 3. resume; 4. steps, with
progress, evaluation and ``ray.train.report``; 5. checkpoints (all ranks write
shards, rank 0 exports and commits).
Everything comes from ``config``; nothing from module globals.
"""

from __future__ import annotations

import logging
import math
import platform
import re
import resource
import shutil
import time
from pathlib import Path
from typing import Any

import ray
import ray.train
import torch
import torch.distributed as dist

from genai import __version__, timeline
from genai import checkpoint as ckpt
from genai.config import JobSpec
from genai.families import get_family
from genai.hardware import resolve_precision
from genai.pictures import save_curves
from genai.specbase import SpecError
from genai.train import metrics as train_metrics
from genai.train import reshard


class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite: the run stops rather than train on garbage."""


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def _quiet_ray_train() -> None:
    # Ray Train V2 logs every report (with all metrics) at INFO from each rank; our own
    # progress line already says it once.
    try:
        from ray.train.v2._internal.execution import context as train_context

        logging.getLogger(train_context.__file__).setLevel(logging.WARNING)
    except ImportError:
        pass


# Errors that a restart would only repeat: Ray Train retries every worker failure
# (train.max_failures), so the first one is recorded and every restart re-raises it at once.
DETERMINISTIC = (TrainingDiverged, ckpt.CheckpointError, SpecError)


def train_loop_per_worker(config: dict[str, Any]) -> None:
    root = Path(config["checkpoint_root"])
    fatal = root / f".fatal-{config['run_id']}"
    if fatal.is_file():  # a restart after a deterministic error: do not train again
        raise TrainingStopped(fatal.read_text())
    try:
        _train(config)
    except DETERMINISTIC as exc:
        root.mkdir(parents=True, exist_ok=True)
        fatal.write_text(f"{type(exc).__name__}: {exc}")
        raise


class TrainingStopped(RuntimeError):
    """A restarted worker group found the run's deterministic error recorded: re-raised."""


def _train(config: dict[str, Any]) -> None:
    # 1. context
    _quiet_ray_train()
    spec = JobSpec.model_validate(config["spec"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.manual_seed(spec.train.seed)
    if not spec.scaling.use_gpu:
        # Ray leaves Train workers' OpenMP at the machine's core count: two workers on two
        # cores would run four spinning threads. One thread per CPU the worker was given.
        torch.set_num_threads(max(1, int(spec.scaling.cpus_per_worker)))
    say = (
        (lambda msg: print(f"[{spec.name}] {msg}", flush=True)) if rank == 0 else (lambda msg: None)
    )

    rss_start = _rss_peak_mb()
    # 2. where this start continues from (before the engines: on another worker count the
    # per-worker batch changes), then data + model + DeepSpeed engine(s)
    root = Path(config["checkpoint_root"])
    src = _resume_source(config, root)
    meta = ckpt.read_meta(src) if src is not None else None
    spec = _fit_batch_to_world(spec, meta, world, say)
    mark = timeline.mark if rank == 0 else (lambda phase: None)
    task = get_family(spec.model.family).load_task()(spec, config["data"], rank, world)
    mark("engines ready")
    say(
        f"{task.describe()}; {world} workers, ZeRO-{spec.deepspeed.zero_stage} {resolve_precision(spec.deepspeed.precision)}"
    )
    node_ids = _node_ids(world)
    history: list[dict[str, float]] = []  # evaluations
    curves: list[dict[str, float]] = []  # every logged step, for curves.png
    rate_key = f"{task.unit}_per_s"

    # 3. resume: from what the driver named or, when Ray Train restarted the workers after
    # a failure, from this run's own newest checkpoint (if newer); debris of a checkpoint
    # the failure interrupted is removed first
    start = 0
    # a restart of this run by Ray Train finds the marker its first start left
    started = root / f".started-{config['run_id']}"
    restarted = started.exists()
    _barrier()
    if rank == 0:
        for debris in ckpt.clean_staging(root, config["run_id"]):
            say(f"removed the interrupted checkpoint's staging dir {debris.name}")
        root.mkdir(parents=True, exist_ok=True)
        started.touch()
    _barrier()
    if src is None and restarted:
        say("recovered from a failure: no checkpoint committed yet, starting again at step 0")
    if src is not None and meta is not None:
        start = _load_engines(task, src, meta, root, config["run_id"], world, rank, say)
        history, curves = list(meta.history), list(meta.curves)
        # a Ray Train restart finds its first start's marker; a --resume keeps the run id
        # of the checkpoint it continues but starts without a marker (the driver cleared it)
        if restarted:
            say(f"recovered from a failure: continuing from {src} at step {start}")
        else:
            say(f"resumed from {src} at step {start}")

    def save(step: int, metrics: dict[str, float]) -> Path:
        # 5. every rank writes its shards into one staging dir, rank 0 exports + commits
        staging = ckpt.staging_dir(root, step, config["run_id"])
        if rank == 0:
            staging.mkdir(parents=True, exist_ok=True)
        _barrier()
        for name, engine in task.engines.items():
            engine.save(
                staging / ckpt.DS_DIR / name, tag=ckpt.step_name(step), client_state={"step": step}
            )
        export = task.export(staging)
        pictures = task.pictures(staging, step)
        _barrier()
        if rank == 0:
            if curves:
                pictures.append(
                    save_curves(
                        curves, staging / "curves.png", f"{spec.name} ({spec.model.family})"
                    )
                )
            _check_shared_storage(staging, world, spec.deepspeed.zero_stage)
            meta = ckpt.Meta(
                family=spec.model.family,
                name=spec.name,
                step=step,
                metrics=metrics,
                history=history,
                curves=curves,
                pictures=[p.name for p in pictures],
                spec=spec.model_dump(mode="json"),
                spec_hash=spec.spec_hash(),
                deepspeed_config={n: e.config for n, e in task.engines.items()},
                world_size=world,
                node_ids=node_ids,
                n_params=task.n_params,
                versions=_versions(),
                created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                export=export,
                run_id=config["run_id"],
            )
            ckpt.write_meta(staging, meta)
            final = ckpt.commit(staging, root, step, spec.checkpoint.keep)
            say(f"checkpoint {final}")
            for name in sorted(p.name for p in pictures):
                say(f"  picture {final / name}")
        _barrier()
        return root / ckpt.step_name(step)

    # 4. the loop (to max_steps, or to stop_at: a PBT trial runs in segments, and the LR
    # schedule must still be the one for max_steps)
    t = spec.train
    stop_at = min(int(config.get("stop_at") or t.max_steps), t.max_steps)
    if start == 0:
        history.append({"step": 0, **task.evaluate()})
        mark("step 0 evaluated")
        say(f"step 0 {_fmt(history[-1])}")
    window_t, window_steps, first_step_at = time.perf_counter(), 0, None
    rss_first_step = 0.0
    metrics: dict[str, float] = {}
    for step in range(start, stop_at):
        torch.manual_seed(
            hash((t.seed, rank, step)) & 0x7FFFFFFF
        )  # dropout reproducible across resume
        out = task.train_step(step)
        done = step + 1
        bad = {k: v for k, v in out.items() if not math.isfinite(v)}
        if bad:
            raise TrainingDiverged(
                f"TrainingDiverged: {', '.join(f'{k} is {v}' for k, v in bad.items())} at step {done} "
                f"(lr {task.lr:.3g}); lower the learning rate or raise train.warmup_steps"
            )
        window_steps += 1
        if first_step_at is None:
            first_step_at, rss_first_step = time.time(), _rss_peak_mb()
            mark("first step")
            say(f"first step done {first_step_at - config['t_submit']:.1f}s after submit")
        last = done == stop_at
        evaluate = done % t.eval_every == 0 or last
        if done % t.log_every == 0 or evaluate:
            elapsed = time.perf_counter() - window_t
            metrics = {
                "step": done,
                "lr": task.lr,
                rate_key: window_steps * task.items_per_step / elapsed,
                "time_to_first_step_s": first_step_at - config["t_submit"],
                # this worker's memory: its peak, and what it held before data and engines
                "rss_peak_mb": _rss_peak_mb(),
                "rss_start_mb": rss_start,
                "rss_first_step_mb": rss_first_step,
                **out,
            }
            evaluation = task.evaluate() if evaluate else {}
            if evaluate:
                metrics.update(evaluation)
                history.append({"step": done, **evaluation})
            curves.append({"step": done, **out, **evaluation})
            if rank == 0:
                train_metrics.export(
                    spec.name,
                    spec.model.family,
                    done,
                    task.lr,
                    task.unit,
                    metrics[rate_key],
                    out,
                    evaluation,
                )
            say(
                f"step {done}/{t.max_steps} {_fmt(out)}"
                + (f" | {_fmt(evaluation)}" if evaluate else "")
                + f" | lr {metrics['lr']:.2e} {metrics[rate_key]:,.0f} {task.unit_label}/s"
            )
            window_t, window_steps = time.perf_counter(), 0
        every = spec.checkpoint.every_steps
        if last or (every and done % every == 0):
            path = save(done, metrics)
            ray.train.report({**metrics, "checkpoint_path": str(path)})
        elif done % t.log_every == 0 or evaluate:
            ray.train.report(metrics)
        if done % t.log_every == 0 or evaluate:
            window_t = time.perf_counter()  # do not count checkpoint time as training time
    if rank == 0:
        started.unlink(missing_ok=True)


def _rss_peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _node_ids(world: int) -> list[str]:
    """Every rank's Ray node id, by rank (all ranks call: a collective)."""
    mine = ray.get_runtime_context().get_node_id()
    if world == 1 or not dist.is_initialized():
        return [mine]
    out: list[str] = [""] * world
    dist.all_gather_object(out, mine)
    return out


def _fit_batch_to_world(spec: JobSpec, meta: ckpt.Meta | None, world: int, say) -> JobSpec:
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


def _load_engines(
    task, src: Path, meta: ckpt.Meta, root: Path, run_id: str, world: int, rank: int, say
) -> int:
    """Load every engine's state from checkpoint ``src``; returns its step. Saved on another
    worker count, partitioned state goes through DeepSpeed's universal format first."""
    tag = ckpt.step_name(meta.step)
    reshard_dir = root / f".reshard-{run_id}"
    universal = meta.world_size != world and any(
        reshard.needs_universal(src / ckpt.DS_DIR / name, tag) for name in task.engines
    )
    if universal:
        if rank == 0:
            t0 = time.perf_counter()
            for name in task.engines:
                reshard.to_universal(src / ckpt.DS_DIR / name, tag, reshard_dir / name)
            say(
                f"re-sharding {src.name} from {meta.world_size} to {world} workers "
                f"(DeepSpeed universal checkpoint, {time.perf_counter() - t0:.1f}s)"
            )
        _barrier()
    try:
        steps = {
            name: int(
                engine.load(
                    (reshard_dir if universal else src / ckpt.DS_DIR) / name,
                    tag=tag,
                    universal=universal,
                )["step"]
            )
            for name, engine in task.engines.items()
        }
    finally:
        _barrier()
        if universal and rank == 0:
            shutil.rmtree(reshard_dir, ignore_errors=True)
    if set(steps.values()) != {meta.step}:  # a GAN's two engines must resume together
        raise ckpt.CheckpointError(
            f"{src}: engines saved at steps {steps}, meta.json says {meta.step}"
        )
    return meta.step


def _resume_source(config: dict[str, Any], root: Path) -> Path | None:
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


def _fmt(metrics: dict[str, float]) -> str:
    return " ".join(f"{k} {v:.4g}" for k, v in metrics.items() if k != "step")


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
