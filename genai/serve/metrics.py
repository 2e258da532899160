"""Every serving metric, in one place (exported by Ray with a ``ray_`` prefix).

Created lazily inside a replica: ``ray.serve.metrics`` objects must be built in
the process that records them.
"""

from __future__ import annotations

from functools import cache

from ray.serve import metrics


def count(counter: metrics.Counter, n: int, tags: dict[str, str]) -> None:
    """Add ``n`` to ``counter``; zero is skipped (Ray's ``Counter.inc`` raises on it, and a
    completion whose first token is EOS has no completion tokens)."""
    if n > 0:
        counter.inc(n, tags=tags)


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
def tokens_total() -> metrics.Counter:
    return metrics.Counter(
        "genai_tokens_total",
        description="prompt and completion tokens processed, by API key name",
        tag_keys=("model", "kind", "key"),
    )


@cache
def images_total() -> metrics.Counter:
    return metrics.Counter(
        "genai_images_total",
        description="images generated, reconstructed or interpolated",
        tag_keys=("model", "route"),
    )


@cache
def decode_batch_size() -> metrics.Histogram:
    return metrics.Histogram(
        "genai_decode_batch_size",
        description="sequences in each LM decode step (continuous batching)",
        boundaries=[1, 2, 4, 8, 16, 24, 32, 48, 64, 128],
        tag_keys=("model",),
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
def decode_active() -> metrics.Gauge:
    return metrics.Gauge(
        "genai_decode_active",
        description="LM sequences in the decode batch now",
        tag_keys=("model",),
    )


@cache
def decode_queued() -> metrics.Gauge:
    return metrics.Gauge(
        "genai_decode_queued",
        description="LM requests waiting for a batch row (queue depth)",
        tag_keys=("model",),
    )


@cache
def retries_total() -> metrics.Counter:
    return metrics.Counter(
        "genai_retries_total",
        description="model calls the gateway retried because their replica died before answering",
        tag_keys=("call",),
    )
