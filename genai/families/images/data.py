"""Driver side of the image families: load images, train (or reuse) the quality classifier."""

from __future__ import annotations

from typing import Any

import ray
import torch

from genai.data.images import load_images, to_model_range
from genai.quality import cached_classifier, frechet_distance


def prepare(spec: Any, log=print, images: Any = None) -> dict[str, Any]:
    """Images and labels through the object store; the classifier's weights by value (small).
    ``images``: already loaded by the caller (the VAE family's baseline reads them too)."""
    if images is None:
        images = load_images(spec.data, spec.model.image_size, spec.model.channels)
    log(
        f"data: {len(images.train)} train + {len(images.val)} held-out images "
        f"{spec.model.channels}x{spec.model.image_size}x{spec.model.image_size}, {images.num_classes} classes"
    )
    out = {
        "train_ref": ray.put(images.train),
        "n_train_items": len(images.train),
        "val_ref": ray.put(images.val),
        "train_labels": None if images.train_labels is None else ray.put(images.train_labels),
        "val_labels": None if images.val_labels is None else ray.put(images.val_labels),
        "levels": images.levels,
        "num_classes": images.num_classes,
        "class_names": images.class_names,
        "classifier": None,
    }
    if images.train_labels is not None:
        x = to_model_range(torch.from_numpy(images.train), images.levels, "unit")
        clf, path = cached_classifier(
            spec.data.cache_dir, x, torch.from_numpy(images.train_labels), images.num_classes
        )
        xv = to_model_range(torch.from_numpy(images.val), images.levels, "unit")
        acc = float((clf.predict(xv) == torch.from_numpy(images.val_labels)).float().mean())
        floor = _real_floor(clf, x, xv)
        log(
            f"quality classifier: held-out accuracy {acc:.3f}; real-vs-real feature FD {floor:.2f} ({path})"
        )
        out.update(
            classifier={k: v.numpy() for k, v in clf.state_dict().items()},
            classifier_accuracy=acc,
            real_fd_floor=floor,
        )
    return out


def _real_floor(clf, train_x: torch.Tensor, val_x: torch.Tensor) -> float:
    """FD between real training and held-out images: the best a generator can hope for."""
    n = min(len(train_x), 1000)
    with torch.no_grad():
        return frechet_distance(clf.features(train_x[:n]).numpy(), clf.features(val_x).numpy())
