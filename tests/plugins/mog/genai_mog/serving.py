"""Serving side: one checkpoint's mixture, rebuilt from ``meta.json`` + safetensors."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import torch
from ray.serve import metrics
from safetensors.torch import load_file

from genai.checkpoint import WEIGHTS, Meta
from genai.serve.api import base_card, count
from genai_mog.model import MixtureModel, MoGConfig


@cache
def points_total() -> metrics.Counter:
    return metrics.Counter(
        "genai_mog_points_total", description="points sampled", tag_keys=("model",)
    )


class MoGServer:
    def __init__(self, directory: Path, meta: Meta, spec: Any) -> None:
        self.directory, self.meta = directory, meta
        self.model = MixtureModel(MoGConfig(**meta.export["model_config"]))
        state = load_file(directory / WEIGHTS)
        self.model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
        self.model.eval()

    def info(self) -> dict[str, Any]:
        return {**base_card(self.directory, self.meta), "components": self.model.cfg.components}

    def sample(self, n: int, seed: int | None) -> list[list[float]]:
        gen = torch.Generator()
        gen.manual_seed(seed) if seed is not None else gen.seed()
        points = self.model.sample(n, gen)
        count(points_total(), n, {"model": self.meta.name})
        return points.tolist()

    def close(self) -> None:
        pass
