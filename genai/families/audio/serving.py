"""Serving side of the audio family: the GAN's generator in the model replica.

Rebuilt from ``meta.json``'s ``export.model_config`` + ``model.safetensors`` (never a
pickle). Speech requests are batched with ``@serve.batch``: the digits of every request
in the batch go through one forward pass, each request keeping its own latent (its
voice), and come back as one WAV per request."""

from __future__ import annotations

import asyncio
import io
import math
import threading
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ray import serve
from ray.serve import metrics
from safetensors.torch import load_file

from genai.checkpoint import WEIGHTS, Meta, open_for_inference
from genai.families.audio.config import AudioGANConfig
from genai.families.audio.nets import ClipCodec, build
from genai.serve.api import base_card, count


@cache
def clips_total() -> metrics.Counter:
    return metrics.Counter(
        "genai_audio_clips_total", description="audio clips generated", tag_keys=("model",)
    )


@cache
def audio_seconds_total() -> metrics.Counter:
    return metrics.Counter(
        "genai_audio_seconds_total",
        description="seconds of audio returned (speech and rendered music)",
        tag_keys=("model",),
    )


def count_seconds(model: str, seconds: float) -> None:
    if seconds > 0:  # Ray's Counter.inc refuses zero
        audio_seconds_total().inc(seconds, tags={"model": model})


def wav(samples: np.ndarray, sample_rate: int) -> bytes:
    """float samples in [-1, 1] -> a 16-bit PCM WAV file."""
    import soundfile

    buf = io.BytesIO()
    soundfile.write(buf, np.clip(samples, -1, 1), sample_rate, subtype="PCM_16", format="WAV")
    return buf.getvalue()


def load_generator(path: str | Path) -> tuple[Path, Meta, AudioGANConfig, Any]:
    """The checkpoint's directory, meta, model config and generator (an ``nn.Module`` with
    ``latents(n, generator, labels)``, in eval mode)."""
    directory, meta = open_for_inference(path, "audio")
    cfg = AudioGANConfig(**meta.export["model_config"])
    gen, _ = build(cfg)
    state = load_file(directory / WEIGHTS)
    gen.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    return directory, meta, cfg, gen.eval()


class AudioServer:
    def __init__(self, directory: Path, meta: Meta, spec: Any) -> None:
        torch.set_num_threads(spec.torch_threads or max(1, math.ceil(spec.num_cpus)))
        self.path, self.meta, self.cfg, self.gen = load_generator(directory)
        self.codec = ClipCodec(self.cfg)
        self.class_names: list[str] = list(meta.export.get("class_names") or [])
        self._lock = threading.Lock()
        batcher: Any = self._speak_batch  # @serve.batch's wrapper, sized by the serve spec
        batcher.set_max_batch_size(spec.audio.max_batch_size)
        batcher.set_batch_wait_timeout_s(spec.audio.batch_wait_timeout_s)

    def info(self) -> dict[str, Any]:
        return {
            **base_card(self.path, self.meta),
            "sample_rate": self.cfg.sample_rate,
            "clip_seconds": round(self.cfg.seconds, 4),
            "conditional": self.cfg.conditional,
            "class_names": self.class_names,
        }

    async def speak(self, labels: list[int], seed: int) -> bytes:
        """One clip per label from one latent (one voice), joined: a WAV."""
        return await self._speak_batch({"labels": labels, "seed": seed})

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.01)
    async def _speak_batch(self, reqs: list[dict[str, Any]]) -> list[bytes]:
        return await asyncio.to_thread(self._speak_many, reqs)

    def _speak_many(self, reqs: list[dict[str, Any]]) -> list[bytes]:
        zs, labels = [], []
        for r in reqs:
            z, _ = self.gen.latents(1, torch.Generator().manual_seed(r["seed"]))
            zs.append(z.expand(len(r["labels"]), -1))
            labels.append(torch.tensor(r["labels"]))
        with self._lock, torch.inference_mode():  # every request's clips in one forward
            raw = self.gen(torch.cat(zs), torch.cat(labels) if self.cfg.conditional else None)
            clips = self.codec.decode(raw).numpy()
        out, i = [], 0
        for r in reqs:
            k = len(r["labels"])
            out.append(wav(clips[i : i + k].reshape(-1), self.cfg.sample_rate))
            i += k
        count(clips_total(), len(clips), {"model": self.meta.name})
        count_seconds(self.meta.name, len(clips) * self.cfg.seconds)
        return out

    def close(self) -> None:
        pass


def server(directory: Path, meta: Meta, spec: Any) -> AudioServer:
    return AudioServer(directory, meta, spec)
