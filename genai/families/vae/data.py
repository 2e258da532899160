"""Driver side of the VAE family: the image data, plus a baseline to beat."""

from __future__ import annotations

from typing import Any

import ray

from genai.data.images import diagonal_gaussian_nll
from genai.families.images.data import prepare as prepare_images


def prepare(spec: Any, log=print) -> dict[str, Any]:
    out = prepare_images(spec, log)
    train, val = ray.get(out["train_ref"]), ray.get(out["val_ref"])
    out["baseline_nll"] = diagonal_gaussian_nll(train, val, out["levels"])
    log(
        f"baseline: diagonal Gaussian fit to training pixels, held-out NLL {out['baseline_nll']:.2f} nats/image"
    )
    return out
