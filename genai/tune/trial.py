"""One trial of a sweep: a Ray Tune function trainable that builds and fits a ``TorchTrainer``.

The Ray Train V2 way: the trial function calls the same ``prepare -> build_trainer -> fit``
as ``genai train`` (data comes prepared, once, from the sweep driver), and rank 0's
reports reach Tune through ``TuneReportCallback`` in the trainer's ``RunConfig``.

Each trial commits genai checkpoints under ``<sweep>/trials/<trial_id>/``. Where it
starts: a checkpoint Tune hands it (a PBT exploit, or a restored sweep), else the
latest in its own directory (a sweep resumed after its driver died), else step 0.

PBT needs Tune to hold checkpoints, and ``TuneReportCallback`` forwards metrics only (a
reported Train checkpoint reaches Tune as a ``checkpoint_path`` string). So under PBT a
trial fits in segments of ``perturbation_interval`` steps, and after each the trial
function reports the committed checkpoint itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ray import tune
from ray.train import Checkpoint
from ray.tune.integration.ray_train import TuneReportCallback

from genai import checkpoint as ckpt
from genai import timeline
from genai.config import parse_job
from genai.train.run import build_trainer, check_fits, fit
from genai.tune.spec import Sweep


class _ReportToTune(TuneReportCallback):
    """Rank 0's reports to Tune; under PBT only those with the metric and no checkpoint
    (the checkpointed report of a segment's end is sent by the trial function, with it)."""

    def __init__(self, pbt_metric: str | None = None) -> None:
        super().__init__()
        self.pbt_metric = pbt_metric

    def after_report(self, run_context, metrics, checkpoint) -> None:
        if self.pbt_metric is not None:
            first = metrics[0]
            if "checkpoint_path" in first or self.pbt_metric not in first:
                return
        super().after_report(run_context, metrics, checkpoint)


def run_trial(config: dict[str, Any], *, sweep: Sweep, data: dict[str, Any]) -> None:
    timeline.mark("trial started")
    trial_id = tune.get_context().get_trial_id()
    spec = parse_job(sweep.trial_raw(config, trial_id))  # a bad combination fails this trial only
    check_fits(spec, data)  # before a worker group starts for it
    root = spec.checkpoint_dir
    ckpt.clean_staging(root)
    root.mkdir(parents=True, exist_ok=True)

    given = tune.get_checkpoint()
    resume_from = Path(given.path) if given is not None else ckpt.find_latest(root)
    meta = ckpt.read_meta(resume_from) if resume_from else None
    step, max_steps = (meta.step if meta else 0), spec.train.max_steps
    storage = root.parent / "ray"
    if meta is not None and step >= max_steps:
        # handed a finished checkpoint (a sweep resumed after its driver died at the end):
        # its result still belongs in this trial's record
        tune.report({**meta.metrics, "step": meta.step})
        return

    if sweep.spec.scheduler.kind != "pbt":
        trainer = build_trainer(
            spec,
            data,
            root,
            resume_from=resume_from,
            callbacks=[_ReportToTune()],
            storage_path=storage,
        )
        fit(trainer, root)
        return

    interval = sweep.spec.scheduler.perturbation_interval
    while step < max_steps:
        stop_at = min(max_steps, (step // interval + 1) * interval)
        trainer = build_trainer(
            spec,
            data,
            root,
            resume_from=resume_from,
            callbacks=[_ReportToTune(pbt_metric=sweep.metric)],
            storage_path=storage,
            stop_at=stop_at,
        )
        final = fit(trainer, root)
        meta = ckpt.read_meta(final)
        tune.report(
            {**meta.metrics, "step": meta.step}, checkpoint=Checkpoint.from_directory(final)
        )
        resume_from, step = final, meta.step
