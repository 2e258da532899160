"""Serving side of the image families: a GAN's generator or a VAE, held in the gateway replica.

Rebuilt from ``meta.json``'s ``export.model_config`` + ``model.safetensors``; never a pickle.
Generation requests are batched with ``@serve.batch``: concurrent requests are
stacked into one forward pass, each keeping its own seed, count and class.
"""

from __future__ import annotations

import asyncio
import base64
import math
import random
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ray import serve
from safetensors.torch import load_file

from genai.checkpoint import WEIGHTS, Meta, open_for_inference
from genai.families.images.metrics import images_total
from genai.models.gan import GANConfig, Generator
from genai.models.vae import VAE, VAEConfig
from genai.pictures import png_bytes
from genai.serve.api import base_card, count


@dataclass
class LoadedImageModel:
    name: str
    path: Path
    meta: Meta
    model: Any  # a GAN's Generator or a VAE: each has the methods its family's routes call

    @property
    def family(self) -> str:
        return self.meta.family


def load_image_model(path: str | Path) -> LoadedImageModel:
    """A GAN's generator or a VAE, rebuilt from ``meta.json``'s model_config + safetensors."""
    directory, meta = open_for_inference(path, ("gan", "vae"))
    config = meta.export["model_config"]
    if meta.family == "gan":
        model: torch.nn.Module = Generator(GANConfig(**config))
    else:
        model = VAE(VAEConfig(**config))
    state = load_file(directory / WEIGHTS)
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    return LoadedImageModel(name=meta.name, path=directory, meta=meta, model=model.eval())


def _b64_png(image: torch.Tensor) -> str:
    return base64.b64encode(png_bytes(image)).decode()


class ImageServer:
    def __init__(self, directory: Path, meta: Meta, spec: Any) -> None:
        torch.set_num_threads(spec.torch_threads or max(1, math.ceil(spec.num_cpus)))
        self.m = load_image_model(directory)
        self.cfg = self.m.model.cfg
        self._lock = threading.Lock()
        batcher: Any = self._generate_batch  # @serve.batch's wrapper, sized by the serve spec
        batcher.set_max_batch_size(spec.images.max_batch_size)
        batcher.set_batch_wait_timeout_s(spec.images.batch_wait_timeout_s)

    def info(self) -> dict[str, Any]:
        return {
            **base_card(self.m.path, self.m.meta),
            "image_size": self.cfg.image_size,
            "channels": self.cfg.channels,
            "conditional": bool(getattr(self.cfg, "conditional", False)),
            # unnamed classes (Parquet labels) are called by their index
            "class_names": self.m.meta.export.get("class_names")
            or [str(i) for i in range(getattr(self.cfg, "num_classes", 0))],
        }

    async def generate(self, req: dict[str, Any]) -> list[str]:
        """``req``: n, seed (or None), label (or None: random classes) -> base64 PNGs."""
        return await self._generate_batch(req)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def _generate_batch(self, reqs: list[dict[str, Any]]) -> list[list[str]]:
        return await asyncio.to_thread(self._generate_many, reqs)

    def _generate_many(self, reqs: list[dict[str, Any]]) -> list[list[str]]:
        zs, labels = [], []
        model = self.m.model
        for r in reqs:
            gen = torch.Generator().manual_seed(
                r["seed"] if r.get("seed") is not None else random.getrandbits(62)
            )
            asked = None if r.get("label") is None else torch.full((r["n"],), r["label"])
            z, lab = model.latents(r["n"], gen, asked)
            zs.append(z)
            if lab is not None:
                labels.append(lab)
        z = torch.cat(zs)  # one forward for every request in the batch
        with self._lock, torch.inference_mode():
            images = model.images(z, torch.cat(labels) if labels else None)
        out, i = [], 0
        for r in reqs:
            out.append([_b64_png(img) for img in images[i : i + r["n"]]])
            i += r["n"]
        count(images_total(), len(z), {"model": self.m.name, "route": "generations"})
        return out

    def _to_unit(self, images: list[np.ndarray]) -> torch.Tensor:
        return torch.from_numpy(np.stack(images)).float() / 255.0  # (N, C, S, S) in [0, 1]

    async def reconstruct(self, images: list[np.ndarray]) -> list[str]:
        def run() -> list[str]:
            with self._lock, torch.inference_mode():
                out = self.m.model.reconstruct(self._to_unit(images))
            return [_b64_png(x) for x in out]

        count(images_total(), len(images), {"model": self.m.name, "route": "reconstruct"})
        return await asyncio.to_thread(run)

    async def interpolate(self, a: np.ndarray, b: np.ndarray, steps: int) -> list[str]:
        def run() -> list[str]:
            x = self._to_unit([a, b])
            with self._lock, torch.inference_mode():
                out = self.m.model.interpolate(x[0], x[1], steps)
            return [_b64_png(img) for img in out]

        count(images_total(), steps, {"model": self.m.name, "route": "interpolate"})
        return await asyncio.to_thread(run)

    def close(self) -> None:
        pass


def server(directory: Path, meta: Meta, spec: Any) -> ImageServer:
    return ImageServer(directory, meta, spec)
