"""The image families' serving metrics."""

from __future__ import annotations

from functools import cache

from ray.serve import metrics


@cache
def images_total() -> metrics.Counter:
    return metrics.Counter(
        "genai_images_total",
        description="images generated, reconstructed or interpolated",
        tag_keys=("model", "route"),
    )
