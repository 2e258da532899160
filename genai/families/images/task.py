"""What the GAN and VAE tasks share: image batches, per-rank eval images, the classifier."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from genai.config import JobSpec
from genai.data.batches import StepSampler
from genai.quality import Classifier, save_classifier
from genai.train.engine import Engine
from genai.train.worker import get_ref, readonly_tensor, tensor_or_none

CLASSIFIER = "classifier.safetensors"


class ImageTask:
    """What GAN and VAE training share: image batches, per-rank eval images, the classifier."""

    unit, unit_label = "images", "img"

    def __init__(self, spec: JobSpec, data: dict[str, Any], rank: int, world_size: int) -> None:
        self.spec, self.rank, self.world_size = spec, rank, world_size
        self.train_q = readonly_tensor(get_ref(data["train_ref"]))
        self.val_q = readonly_tensor(get_ref(data["val_ref"]))
        self.train_y = tensor_or_none(data.get("train_labels"))
        self.val_y = tensor_or_none(data.get("val_labels"))
        self.levels, self.num_classes = data["levels"], data["num_classes"]
        self.class_names: list[str] = list(data.get("class_names") or [])
        self.classifier = None
        self.classifier_accuracy: float | None = data.get("classifier_accuracy")
        if data.get("classifier") is not None:
            self.classifier = Classifier(self.classifier_channels(), self.num_classes)
            self.classifier.load_state_dict(
                {k: torch.from_numpy(v) for k, v in data["classifier"].items()}
            )
            self.classifier.eval()
        t = spec.train
        self.sampler = StepSampler(
            len(self.train_q), t.micro_batch_size, 1, rank, world_size, t.seed
        )

    def classifier_channels(self) -> int:
        """Channels of the quality classifier's input (the images'; a family whose
        classifier reads another picture of its data, a spectrogram, says so)."""
        return self.spec.model.channels

    @property
    def items_per_step(self) -> int:
        return self.sampler.global_batch

    @property
    def engines(self) -> dict[str, Engine]:
        raise NotImplementedError  # each image task names its engines

    @property
    def dtype(self) -> torch.dtype:
        """The engines' parameter dtype; DeepSpeed does not cast inputs for us."""
        return next(iter(self.engines.values())).dtype

    def _batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        idx = torch.from_numpy(self.sampler.indices(step))
        return self.train_q[idx], None if self.train_y is None else self.train_y[idx]

    def _export_classifier(self, directory: Path) -> dict[str, Any]:
        """The quality classifier travels with the checkpoint: it is self-contained."""
        if self.classifier is None:
            return {}
        if self.rank == 0:
            save_classifier(self.classifier, directory / CLASSIFIER)
        return {"classifier": CLASSIFIER, "classifier_accuracy": self.classifier_accuracy}
