"""``train_loop_per_worker``: the recipe every Ray Train worker runs, in order:

1. context: the spec, this rank, seeds, threads;
2. where this start continues from (:mod:`.resume`), then the family's task: data, model
   and DeepSpeed engine(s);
3. resume the engines' state;
4. steps, with progress, evaluation and ``ray.train.report``, and checkpoints
   (:mod:`.saving`: all ranks write shards, rank 0 exports and commits).

Everything comes from ``config``; nothing from module globals.
"""

from __future__ import annotations

import logging
import math
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
import ray.train
import torch
import torch.distributed as dist

from genai import checkpoint as ckpt
from genai import timeline
from genai.config import JobSpec
from genai.families import get_family
from genai.families.contract import Task
from genai.hardware import resolve_precision
from genai.specbase import SpecError
from genai.train import metrics as train_metrics
from genai.train.resume import barrier, fit_batch_to_world, load_engines, resume_source
from genai.train.saving import save


class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite: the run stops rather than train on garbage."""


class TrainingStopped(RuntimeError):
    """A restarted worker group found the run's deterministic error recorded: re-raised."""


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


@dataclass
class RunState:
    """One rank's view of the run: what every phase reads, and the history it grows."""

    config: dict[str, Any]
    spec: JobSpec
    rank: int
    world: int
    say: Callable[[str], None]
    """a progress line (rank 0 prints, the others are silent)"""
    mark: Callable[[str], None]
    """a start-up phase mark (genai.timeline)"""
    task: Task = field(init=False)
    node_ids: list[str] = field(default_factory=list)
    history: list[dict[str, float]] = field(default_factory=list)
    """every evaluation"""
    curves: list[dict[str, float]] = field(default_factory=list)
    """every logged step, for curves.png"""
    rss_start: float = field(default_factory=lambda: _rss_peak_mb())

    @property
    def root(self) -> Path:
        return Path(self.config["checkpoint_root"])

    @property
    def run_id(self) -> str:
        return self.config["run_id"]

    @property
    def started_marker(self) -> Path:
        """Left by this run's first start and removed at its end: a Ray Train restart finds it."""
        return self.root / f".started-{self.run_id}"


def _train(config: dict[str, Any]) -> None:
    run = _context(config)  # 1
    src = resume_source(config, run.root)  # 2
    meta = ckpt.read_meta(src) if src is not None else None
    # before the engines: on another worker count the per-worker batch changes
    run.spec = fit_batch_to_world(run.spec, meta, run.world, run.say)
    spec = run.spec
    run.task = get_family(spec.model.family).load_task()(spec, config["data"], run.rank, run.world)
    run.mark("engines ready")
    precision = resolve_precision(spec.deepspeed.precision)
    run.say(
        f"{run.task.describe()}; {run.world} workers, ZeRO-{spec.deepspeed.zero_stage} {precision}"
    )
    run.node_ids = _node_ids(run.world)
    start = _resume(run, src, meta)  # 3
    _steps(run, start)  # 4


def _context(config: dict[str, Any]) -> RunState:
    _quiet_ray_train()
    spec = JobSpec.model_validate(config["spec"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.manual_seed(spec.train.seed)
    if not spec.scaling.use_gpu:
        # Ray leaves Train workers' OpenMP at the machine's core count: two workers on two
        # cores would run four spinning threads. One thread per CPU the worker was given.
        torch.set_num_threads(max(1, int(spec.scaling.cpus_per_worker)))

    def say(msg: str) -> None:
        if rank == 0:
            print(f"[{spec.name}] {msg}", flush=True)

    def mark(phase: str) -> None:
        if rank == 0:
            timeline.mark(phase)

    return RunState(config=config, spec=spec, rank=rank, world=world, say=say, mark=mark)


def _resume(run: RunState, src: Path | None, meta: ckpt.Meta | None) -> int:
    """The step to start at: from what the driver named or, when Ray Train restarted the
    workers after a failure, from this run's own newest checkpoint (if newer). Debris of a
    checkpoint the failure interrupted is removed first."""
    # a restart of this run by Ray Train finds the marker its first start left
    started = run.started_marker
    restarted = started.exists()
    barrier()
    if run.rank == 0:
        for debris in ckpt.clean_staging(run.root, run.run_id):
            run.say(f"removed the interrupted checkpoint's staging dir {debris.name}")
        run.root.mkdir(parents=True, exist_ok=True)
        started.touch()
    barrier()
    if src is None or meta is None:
        if restarted:
            run.say(
                "recovered from a failure: no checkpoint committed yet, starting again at step 0"
            )
        return 0
    engines = run.task.engines
    start = load_engines(engines, src, meta, run.root, run.run_id, run.world, run.rank, run.say)
    run.history, run.curves = list(meta.history), list(meta.curves)
    # a Ray Train restart finds its first start's marker; a --resume keeps the run id of
    # the checkpoint it continues but starts without a marker (the driver cleared it)
    if restarted:
        run.say(f"recovered from a failure: continuing from {src} at step {start}")
    else:
        run.say(f"resumed from {src} at step {start}")
    return start


@dataclass
class _Window:
    """Throughput over the steps since the last logged one; checkpoints are not counted."""

    t: float = field(default_factory=time.perf_counter)
    steps: int = 0
    first_step_at: float | None = None
    rss_first_step: float = 0.0


def _steps(run: RunState, start: int) -> None:
    """To max_steps, or to stop_at: a PBT trial runs in segments, and the LR schedule must
    still be the one for max_steps."""
    t, task = run.spec.train, run.task
    stop_at = min(int(run.config.get("stop_at") or t.max_steps), t.max_steps)
    if start == 0:
        run.history.append({"step": 0, **task.evaluate()})
        run.mark("step 0 evaluated")
        run.say(f"step 0 {_fmt(run.history[-1])}")
    window = _Window()
    metrics: dict[str, float] = {}
    for step in range(start, stop_at):
        # dropout reproducible across resume
        torch.manual_seed(hash((t.seed, run.rank, step)) & 0x7FFFFFFF)
        out = task.train_step(step)
        done = step + 1
        _check_finite(out, done, task.lr)
        window.steps += 1
        if window.first_step_at is None:
            window.first_step_at, window.rss_first_step = time.time(), _rss_peak_mb()
            run.mark("first step")
            run.say(
                f"first step done {window.first_step_at - run.config['t_submit']:.1f}s after submit"
            )
        last = done == stop_at
        evaluate = done % t.eval_every == 0 or last
        logged = done % t.log_every == 0 or evaluate
        if logged:
            metrics = _log_step(run, done, out, window, evaluate)
        every = run.spec.checkpoint.every_steps
        if last or (every and done % every == 0):
            path = save(run, done, metrics)
            ray.train.report({**metrics, "checkpoint_path": str(path)})
        elif logged:
            ray.train.report(metrics)
        if logged:
            window.t = time.perf_counter()  # do not count checkpoint time as training time
    if run.rank == 0:
        run.started_marker.unlink(missing_ok=True)


def _check_finite(out: dict[str, float], done: int, lr: float) -> None:
    bad = {k: v for k, v in out.items() if not math.isfinite(v)}
    if bad:
        raise TrainingDiverged(
            f"TrainingDiverged: {', '.join(f'{k} is {v}' for k, v in bad.items())} at step {done} "
            f"(lr {lr:.3g}); lower the learning rate or raise train.warmup_steps"
        )


def _log_step(
    run: RunState, done: int, out: dict[str, float], window: _Window, evaluate: bool
) -> dict[str, float]:
    """The metrics a logged step reports (with the evaluation, when it is one), its
    progress line and its Prometheus gauges."""
    task = run.task
    rate_key = f"{task.unit}_per_s"
    elapsed = time.perf_counter() - window.t
    assert window.first_step_at is not None
    metrics = {
        "step": done,
        "lr": task.lr,
        rate_key: window.steps * task.items_per_step / elapsed,
        "time_to_first_step_s": window.first_step_at - run.config["t_submit"],
        # this worker's memory: its peak, and what it held before data and engines
        "rss_peak_mb": _rss_peak_mb(),
        "rss_start_mb": run.rss_start,
        "rss_first_step_mb": window.rss_first_step,
        **out,
    }
    evaluation = task.evaluate() if evaluate else {}
    if evaluate:
        metrics.update(evaluation)
        run.history.append({"step": done, **evaluation})
    run.curves.append({"step": done, **out, **evaluation})
    spec = run.spec
    if run.rank == 0:
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
    run.say(
        f"step {done}/{spec.train.max_steps} {_fmt(out)}"
        + (f" | {_fmt(evaluation)}" if evaluate else "")
        + f" | lr {metrics['lr']:.2e} {metrics[rate_key]:,.0f} {task.unit_label}/s"
    )
    window.steps = 0
    return metrics


def _quiet_ray_train() -> None:
    # Ray Train V2 logs every report (with all metrics) at INFO from each rank; our own
    # progress line already says it once.
    try:
        from ray.train.v2._internal.execution import context as train_context

        logging.getLogger(train_context.__file__).setLevel(logging.WARNING)
    except ImportError:
        pass


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


def _fmt(metrics: dict[str, float]) -> str:
    return " ".join(f"{k} {v:.4g}" for k, v in metrics.items() if k != "step")
