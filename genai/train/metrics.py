"""Training metrics for Prometheus, exported from rank 0 through ``ray.util.metrics``
(Ray's metrics export, with a ``ray_`` prefix, beside the serving metrics).

Gauges, set at every logged step: a series lives while its worker does, so dashboards
read them over a time range (Grafana's default), not as an instant.
"""

from __future__ import annotations

from functools import cache

from ray.util.metrics import Gauge

_RUN = ("run", "family")


@cache
def _gauges() -> dict[str, Gauge]:
    return {
        "step": Gauge("genai_train_step", "optimizer steps done", tag_keys=_RUN),
        "loss": Gauge(
            "genai_train_loss", "training losses at the last logged step", tag_keys=(*_RUN, "name")
        ),
        "lr": Gauge("genai_train_learning_rate", "learning rate", tag_keys=_RUN),
        "rate": Gauge(
            "genai_train_items_per_second",
            "training throughput over the last logging window (tokens or images)",
            tag_keys=(*_RUN, "unit"),
        ),
        "eval": Gauge(
            "genai_train_eval", "held-out metrics at the last evaluation", tag_keys=(*_RUN, "name")
        ),
    }


def export(
    run: str,
    family: str,
    step: int,
    lr: float,
    unit: str,
    rate: float,
    losses: dict[str, float],
    evaluation: dict[str, float],
) -> None:
    g, tags = _gauges(), {"run": run, "family": family}
    g["step"].set(step, tags=tags)
    g["lr"].set(lr, tags=tags)
    g["rate"].set(rate, tags={**tags, "unit": unit})
    for name, value in losses.items():
        g["loss"].set(value, tags={**tags, "name": name})
    for name, value in evaluation.items():
        g["eval"].set(value, tags={**tags, "name": name})
