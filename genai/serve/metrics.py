"""The serving metrics every family shares (exported by Ray with a ``ray_`` prefix); a
family's own metrics live with it (``genai/families/<name>/metrics.py``).

Created lazily inside a replica: ``ray.serve.metrics`` objects must be built in
the process that records them.
"""

from __future__ import annotations

from functools import cache

from ray.serve import metrics


@cache
def requests_total() -> metrics.Counter:
    return metrics.Counter(
        "genai_requests_total",
        description="HTTP requests by route, model, status code and API key name",
        tag_keys=("route", "model", "status", "key"),
    )


@cache
def request_latency_s() -> metrics.Histogram:
    return metrics.Histogram(
        "genai_request_latency_s",
        description="end-to-end latency of a request inside the gateway",
        boundaries=[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
        tag_keys=("route", "model"),
    )


@cache
def model_step() -> metrics.Gauge:
    return metrics.Gauge(
        "genai_model_step",
        description="training step of the checkpoint each model is served from",
        tag_keys=("model",),
    )


@cache
def checkpoint_swaps_total() -> metrics.Counter:
    return metrics.Counter(
        "genai_checkpoint_swaps_total",
        description="hot swaps of a served checkpoint: swapped, or refused (the old one serves on)",
        tag_keys=("model", "result"),
    )


@cache
def retries_total() -> metrics.Counter:
    return metrics.Counter(
        "genai_retries_total",
        description="model calls the gateway retried because their replica died before answering",
        tag_keys=("call",),
    )
