"""Driver side of the VAE family: the image data, plus a baseline to beat."""

from __future__ import annotations

from typing import Any

from genai.data.images import diagonal_gaussian_nll, load_images
from genai.families.images.data import prepare as prepare_images


def prepare(spec: Any, log=print) -> dict[str, Any]:
    images = load_images(spec.data, spec.model.image_size, spec.model.channels)
    out = prepare_images(spec, log, images=images)
    out["baseline_nll"] = diagonal_gaussian_nll(images.train, images.val, images.levels)
    log(
        f"baseline: diagonal Gaussian fit to training pixels, held-out NLL {out['baseline_nll']:.2f} nats/image"
    )
    return out
