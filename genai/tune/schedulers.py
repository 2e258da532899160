"""The trial scheduler a sweep's ``scheduler.kind`` names (ASHA, PBT or FIFO)."""

from __future__ import annotations

from ray.tune.schedulers import (
    ASHAScheduler,
    FIFOScheduler,
    PopulationBasedTraining,
    TrialScheduler,
)

from genai.tune.spec import Sweep


class FinishingPBT(PopulationBasedTraining):
    """PBT that leaves a trial alone once it reports its last step.

    A report at ``max_steps`` can fall on a perturbation point. Stock PBT would then pause
    the trial and, if it ranks low, restart it from a stronger trial's checkpoint, also at
    ``max_steps``: the restarted trial has nothing left to train, so it ends without a
    report, and the sweep loses that trial's final result (its row reads zero steps).
    """

    def __init__(self, *, max_steps: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.max_steps = max_steps

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if result.get(self._time_attr, 0) >= self.max_steps:
            return TrialScheduler.CONTINUE
        return super().on_trial_result(tune_controller, trial, result)


def build_scheduler(sweep: Sweep) -> TrialScheduler:
    s, max_steps = sweep.spec.scheduler, sweep.base.train.max_steps
    if s.kind == "asha":
        return ASHAScheduler(
            time_attr="step",
            max_t=max_steps,
            grace_period=min(s.grace_period, max_steps),
            reduction_factor=s.reduction_factor,
        )
    if s.kind == "pbt":
        return FinishingPBT(
            max_steps=max_steps,
            time_attr="step",
            perturbation_interval=s.perturbation_interval,
            hyperparam_mutations={k: d.to_tune() for k, d in sweep.spec.space.items()},
            quantile_fraction=s.quantile_fraction,
            resample_probability=s.resample_probability,
            synch=s.synch,
        )
    return FIFOScheduler()
