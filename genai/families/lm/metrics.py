"""The LM family's serving metrics: tokens, and the continuous decoder's batch."""

from __future__ import annotations

from functools import cache

from ray.serve import metrics


@cache
def tokens_total() -> metrics.Counter:
    return metrics.Counter(
        "genai_tokens_total",
        description="prompt and completion tokens processed, by API key name",
        tag_keys=("model", "kind", "key"),
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
