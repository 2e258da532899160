"""A compact live table of a sweep's trials (a Tune callback), instead of Tune's wide one."""

from __future__ import annotations

import math
import time
from typing import Any

from ray.tune import Callback


class ProgressTable(Callback):
    """Prints one row per trial (status, step, metric, config) at most every ``every_s``
    seconds, and one line whenever a trial ends."""

    def __init__(self, metric: str, mode: str, max_steps: int, every_s: float = 20.0, log=print):
        self.metric, self.mode, self.max_steps = metric, mode, max_steps
        self.every_s, self.log = every_s, log
        self.rows: dict[str, dict[str, Any]] = {}
        self._last_print = 0.0
        self._t0 = time.monotonic()

    def _say(self, msg: str) -> None:
        self.log(f"tune: [{time.monotonic() - self._t0:5.0f}s] {msg}")

    # Tune pickles its callbacks with the experiment state (for --resume); the log function
    # (print, a list's append in tests) is this process's business, not the state's.
    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "log"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, log=print, _t0=time.monotonic())

    def _row(self, trial) -> dict[str, Any]:
        row = self.rows.setdefault(trial.trial_id, {"step": 0, "value": math.nan, "best": math.nan})
        row["config"] = _short(trial.config)
        return row

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self._row(trial)["status"] = "RUNNING"
        self._say(f"trial {trial.trial_id} started: {_short(trial.config)}")

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        row = self._row(trial)
        row["status"] = "RUNNING"
        row["step"] = int(result.get("step", row["step"]))
        if self.metric in result:
            value = float(result[self.metric])
            row["value"] = value
            better = min if self.mode == "min" else max
            row["best"] = value if math.isnan(row["best"]) else better(row["best"], value)
        if time.monotonic() - self._last_print >= self.every_s:
            self.print_table(trials)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        row = self._row(trial)
        row["status"] = "DONE" if row["step"] >= self.max_steps else "STOPPED"
        how = "finished" if row["status"] == "DONE" else "stopped early"
        self._say(
            f"trial {trial.trial_id} {how} at step {row['step']}, {self.metric} {row['value']:.4g}"
        )

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._row(trial)["status"] = "ERROR"
        self._say(f"trial {trial.trial_id} failed at step {self._row(trial)['step']}")

    def print_table(self, trials) -> None:
        self._last_print = time.monotonic()
        lines = [f"{'trial':<12} {'status':<8} {'step':>6} {self.metric:>12} {'best':>10}  config"]
        for t in trials:
            row = self.rows.get(t.trial_id)
            if row is None:
                lines.append(
                    f"{t.trial_id:<12} {'PENDING':<8} {'':>6} {'':>12} {'':>10}  {_short(t.config)}"
                )
                continue
            lines.append(
                f"{t.trial_id:<12} {row.get('status', t.status):<8} {row['step']:>6} "
                f"{row['value']:>12.4g} {row['best']:>10.4g}  {row['config']}"
            )
        self.log("\n".join(lines))


def _short(config: dict[str, Any]) -> str:
    return ", ".join(
        f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(config.items())
    )
