"""Worker side: maximum likelihood on one DeepSpeed engine, every number in nats per point."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from genai.checkpoint import WEIGHTS
from genai.data.batches import StepSampler
from genai.train.engine import Engine
from genai.train.worker import all_mean, full_params, get_ref, readonly_tensor
from genai_mog.model import MixtureModel, MoGConfig


class MoGTask:
    unit, unit_label = "points", "pt"

    def __init__(self, spec: Any, data: dict[str, Any], rank: int, world_size: int) -> None:
        self.spec, self.rank, self.world_size = spec, rank, world_size
        self.train_x = readonly_tensor(get_ref(data["train_ref"]))
        val = readonly_tensor(get_ref(data["val_ref"]))
        self.val_x = val[rank::world_size]  # each rank scores its share; all_mean averages
        self.true_nll = float(data["true_nll"])
        self.cfg = MoGConfig(components=spec.model.components)
        torch.manual_seed(spec.train.seed)
        model = MixtureModel(self.cfg, init_scale=spec.data.radius / 2)
        self.n_params = sum(p.numel() for p in model.parameters())
        self.engine = Engine(model, spec.deepspeed, spec.train, world_size)
        t = spec.train
        self.sampler = StepSampler(
            len(self.train_x), t.micro_batch_size, t.grad_accum_steps, rank, world_size, t.seed
        )

    @property
    def engines(self) -> dict[str, Engine]:
        return {"mixture": self.engine}

    @property
    def items_per_step(self) -> int:
        return self.sampler.global_batch

    @property
    def lr(self) -> float:
        return self.engine.lr

    def describe(self) -> str:
        return (
            f"Gaussian mixture, {self.cfg.components} components, {self.items_per_step} points/step"
        )

    def _nll(self, x: torch.Tensor) -> torch.Tensor:
        return self.engine(x.to(self.engine.device, dtype=self.engine.dtype)).float().mean()

    def train_step(self, step: int) -> dict[str, float]:
        self.engine.train()
        total = 0.0
        for micro in range(self.sampler.grad_accum):
            loss = self._nll(self.train_x[torch.from_numpy(self.sampler.indices(step, micro))])
            self.engine.backward(loss)
            self.engine.step()
            total += float(loss.detach()) / self.sampler.grad_accum
        return all_mean({"nll": total}, self.engine.device)

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        self.engine.train(False)
        metrics = all_mean({"val_nll": float(self._nll(self.val_x))}, self.engine.device)
        return {**metrics, "true_nll": self.true_nll}

    def pictures(self, directory: Path, step: int) -> list[Path]:
        """A 2-D histogram of 4096 samples beside one of the held-out points."""
        with full_params(self.engine):
            samples = self.engine.module.sample(4096, torch.Generator().manual_seed(7))
        if self.rank != 0:
            return []
        r = 1.5 * float(self.val_x.abs().max())
        panels = [_histogram(p.numpy(), r) for p in (samples, self.val_x)]
        path = directory / "samples.png"
        Image.fromarray(np.concatenate(panels, 1)).save(path)
        return [path]

    def export(self, directory: Path) -> dict[str, Any]:
        n = self.engine.export(directory / WEIGHTS)
        return {"model_config": self.cfg.to_dict(), "n_tensors": n}


def _histogram(points: np.ndarray, r: float, side: int = 128) -> np.ndarray:
    h, _, _ = np.histogram2d(points[:, 1], points[:, 0], bins=side, range=[[-r, r], [-r, r]])
    return (255 * (1 - h / max(1.0, h.max()))).astype(np.uint8)[::-1]
