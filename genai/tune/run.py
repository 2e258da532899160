"""The driver side of ``genai tune``: prepare the data once, run Tune, report, promote.

genai tune jobs/tune-lm-lr.yaml                # embedded local Ray
genai tune jobs/tune-lm-lr.yaml --resume       # after the driver died
genai tune jobs/tune-lm-lr.yaml --address auto # a running cluster
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray import tune
from ray.tune import CheckpointConfig, FailureConfig, RunConfig, TuneConfig
from ray.tune.search.basic_variant import BasicVariantGenerator

from genai import cluster
from genai.specbase import SpecError
from genai.train.run import prepare
from genai.tune.progress import ProgressTable
from genai.tune.results import (
    TrialRow,
    best_row,
    collect,
    format_table,
    plot_curves,
    promote,
    save_tables,
)
from genai.tune.schedulers import build_scheduler
from genai.tune.spec import Sweep
from genai.tune.trial import run_trial

# The trial function only drives its TorchTrainer (the workers hold the CPUs), but Tune will
# not place a trial that asks for nothing: one byte of memory is a request that costs no CPU.
TRIAL_RESOURCES: dict[str, float] = {"CPU": 0, "memory": 1}


class SweepFailed(RuntimeError):
    """Every trial of a sweep failed."""


@dataclass
class SweepResult:
    rows: list[TrialRow]
    best: TrialRow
    best_checkpoint: Path
    files: dict[str, Path]


def concurrent_trials(sweep: Sweep) -> int:
    """As many trials at once as the cluster's CPUs (and GPUs) fit, for each trial's scaling."""
    if sweep.spec.max_concurrent_trials:
        return sweep.spec.max_concurrent_trials
    scaling, have = sweep.base.scaling, ray.cluster_resources()
    fits = int(have.get("CPU", 1) // (scaling.num_workers * scaling.cpus_per_worker))
    if scaling.use_gpu:
        fits = min(fits, int(have.get("GPU", 0) // scaling.num_workers))
    if fits < 1:
        raise SpecError(
            f"one trial needs scaling.num_workers={scaling.num_workers} x "
            f"cpus_per_worker={scaling.cpus_per_worker} CPUs; the cluster has {have.get('CPU', 0):g}"
        )
    return fits


def tune_sweep(
    sweep: Sweep, *, address: str | None = None, resume: bool = False, log=print
) -> SweepResult:
    """Run the sweep (or resume it), then write its tables and curves and promote the best
    trial's checkpoint to ``<storage>/best``."""
    root = sweep.root
    experiment = root / "tune" / sweep.name
    if resume and not tune.Tuner.can_restore(str(experiment)):
        log(f"resume: no sweep state under {experiment}; starting the sweep")
        resume = False
    earlier = any((root / "trials").glob("*")) or experiment.exists()
    if not resume and earlier:
        raise SpecError(
            f"{root} holds an earlier sweep: pass --resume to continue it, "
            "or delete the directory (or set storage) to start over"
        )
    root.mkdir(parents=True, exist_ok=True)
    # Reports between evaluations (progress, loss, throughput) do not carry the metric;
    # the schedulers skip them, and Tune's strict check would otherwise fail the sweep.
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"

    with cluster.connect(address):
        data = prepare(sweep.base, log)  # once for every trial (searched keys never touch data)
        trainable = tune.with_resources(
            tune.with_parameters(run_trial, sweep=sweep, data=data), TRIAL_RESOURCES
        )
        progress = ProgressTable(sweep.metric, sweep.mode, sweep.base.train.max_steps, log=log)
        if resume:
            log(f"tune: resuming {experiment}")
            tuner = tune.Tuner.restore(
                str(experiment),
                trainable=trainable,
                resume_unfinished=True,
                resume_errored=False,
                restart_errored=False,
            )
        else:
            tuner = _new_tuner(sweep, trainable, progress, log)
        grid = tuner.fit()
    return _report(collect(grid, sweep), sweep, experiment, log)


def _new_tuner(sweep: Sweep, trainable: Any, progress: ProgressTable, log) -> tune.Tuner:
    n = concurrent_trials(sweep)
    space = {k: d.to_tune() for k, d in sweep.spec.space.items()}
    log(
        f"tune: {sweep.name}: {sweep.num_samples} sample(s) of "
        + ", ".join(f"{k} ~ {d}" for k, d in sweep.spec.space.items())
        + f"; {sweep.spec.scheduler.kind} on {sweep.metric} ({sweep.mode}); {n} trial(s) at once"
    )
    return tune.Tuner(
        trainable,
        param_space=space,
        tune_config=TuneConfig(
            metric=sweep.metric,
            mode=sweep.mode,
            num_samples=sweep.num_samples,
            scheduler=build_scheduler(sweep),
            # the generator itself must hold trials back: Tune does not limit a search_alg
            # it is handed
            search_alg=BasicVariantGenerator(random_state=sweep.spec.seed, max_concurrent=n),
            max_concurrent_trials=n,
            reuse_actors=False,
        ),
        run_config=RunConfig(
            name=sweep.name,
            storage_path=str(sweep.root / "tune"),
            failure_config=FailureConfig(max_failures=0),
            # keep every reported checkpoint: a PBT exploit may restore a donor's older one
            # while the donor goes on (num_to_keep would delete it under it)
            checkpoint_config=CheckpointConfig(num_to_keep=None),
            callbacks=[progress],
            verbose=0,
        ),
    )


def _report(rows: list[TrialRow], sweep: Sweep, experiment: Path, log) -> SweepResult:
    """The trial table, files and curves; the best trial's checkpoint promoted."""
    log("\n" + format_table(rows, sweep))
    csv_path, parquet_path = save_tables(rows, sweep.root)
    png = plot_curves(rows, sweep, sweep.root / "curves.png")
    files = {"csv": csv_path, "parquet": parquet_path, "png": png, "tensorboard": experiment}
    log(
        f"trials: {csv_path} {parquet_path}\ncurves: {png}\ntensorboard: tensorboard --logdir {experiment}"
    )
    best = best_row(rows, sweep)
    if best is None:
        reasons = "; ".join(f"{r.trial_id}: {r.reason}" for r in rows if r.reason)[:600]
        raise SweepFailed(f"every trial of sweep {sweep.name!r} failed ({reasons})")
    path = promote(best, sweep)
    log(f"best checkpoint: {path}")
    log(f"best config: {best.config} ({sweep.metric} {best.last:.4g}, trial {best.trial_id})")
    return SweepResult(rows=rows, best=best, best_checkpoint=path, files=files)


def clear(sweep: Sweep) -> None:
    """Delete an earlier sweep's directory (``--fresh``)."""
    shutil.rmtree(sweep.root, ignore_errors=True)
