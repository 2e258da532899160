"""Worker side of the audio family: WaveGAN on the GAN family's two DeepSpeed engines.

The step shapes (one D forward over [real; fake], a G step with D frozen) are the GAN's
(:class:`~genai.families.gan.task.GANTask`); what differs is the data (16-bit samples
where the GAN has 8-bit pixels), the nets, and the quality measures: a digit classifier
on log-mel spectrograms (conditional accuracy, an Inception-score-like figure, a Fréchet
distance on its features) and pocketsphinx's transcriptions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from genai.config import JobSpec
from genai.families.audio import AudioSpec
from genai.families.audio.config import AudioGANConfig
from genai.families.audio.data import LEVELS
from genai.families.audio.features import log_mel
from genai.families.audio.nets import ClipCodec, build
from genai.families.gan.task import GANTask
from genai.families.images.task import ImageTask
from genai.pictures import save_grid
from genai.quality import Classifier, frechet_distance
from genai.train.engine import Engine

PER_CLASS = 50  # generated clips per digit for the conditional accuracy


class AudioGANTask(GANTask):
    unit, unit_label = "clips", "clips"
    # the GAN's steps read latent_dim, conditional and num_classes, which these share
    cfg: AudioGANConfig  # type: ignore[assignment]
    adv: AudioSpec
    classifier: Classifier

    def __init__(self, spec: JobSpec, data: dict[str, Any], rank: int, world_size: int) -> None:
        # ImageTask's bookkeeping (batches, held-out data, the classifier), GANTask's steps;
        # not GANTask's image nets
        ImageTask.__init__(self, spec, data, rank, world_size)
        self.adv = spec.audio
        t = spec.train
        self.cfg = AudioGANConfig(**spec.model.model_dump(exclude={"family"}))
        torch.manual_seed(t.seed)  # same initial weights on every rank
        gen, disc = build(self.cfg)
        self.codec = ClipCodec(self.cfg)
        self.n_params = sum(p.numel() for m in (gen, disc) for p in m.parameters())
        a, ds = self.adv, spec.deepspeed
        betas = (a.beta1, a.beta2)
        self.g = Engine(gen, ds, t, world_size, lr=a.g_lr, betas=betas, weight_decay=0.0)
        self.d = Engine(disc, ds, t, world_size, lr=a.d_lr, betas=betas, weight_decay=0.0)
        self.reference: dict[str, float] = {
            k: data[k]
            for k in ("real_fd_floor", "classifier_accuracy", "asr_real_accuracy")
            if k in data
        }
        self._real_features: np.ndarray | None = None
        self.judge = None
        if spec.data.judge:
            from genai.families.audio.judge import Judge

            self.judge = Judge()

    def classifier_channels(self) -> int:
        return 1  # it reads log-mel spectrograms

    def describe(self) -> str:
        kind = "conditional " if self.cfg.conditional else ""
        arch = {"specgan": "SpecGAN", "wavegan": "WaveGAN"}[self.cfg.arch]
        shape = f", {self.cfg.mels}x{self.cfg.mels} log-mel" if self.cfg.arch == "specgan" else ""
        return (
            f"{kind}{arch}{shape}, {self.n_params / 1e6:.2f}M parameters, {self.cfg.clip_samples} "
            f"samples at {self.cfg.sample_rate} Hz, {self.items_per_step} clips/step"
        )

    def real_batch(self, batch_index: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        q, y = self._batch(batch_index)  # int16 samples
        real = self.codec.encode(q.float() / (LEVELS // 2))
        return real.to(self.d.device, dtype=self.dtype), y

    @torch.no_grad()
    def samples(self, n: int, seed: int, labels: torch.Tensor | None = None) -> torch.Tensor:
        """n clips (N, samples) in [-1, 1] from a fixed seed; every rank computes the same
        (collective under ZeRO-3)."""
        self.g.train(False)
        z, labels = self.g.module.latents(n, torch.Generator().manual_seed(seed), labels)
        out = []
        for i in range(0, n, 128):
            zc = z[i : i + 128].to(self.g.device, dtype=self.dtype)
            lc = None if labels is None else labels[i : i + 128].to(self.g.device)
            out.append(self.codec.decode(self.g(zc, lc).float().cpu()))
        self.g.train(True)
        return torch.cat(out).clamp(-1, 1)

    def _mel(self, clips: torch.Tensor) -> torch.Tensor:
        return log_mel(clips, self.cfg.sample_rate)

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        clf = self.classifier
        if self._real_features is None:
            real = self.val_q.float() / (LEVELS // 2)
            self._real_features = clf.features(self._mel(real)).numpy()
        fake = self._mel(self.samples(self.adv.eval_samples, seed=1234))
        probs = clf(fake).softmax(1)
        preds = probs.argmax(1)
        out = {
            "fd": frechet_distance(clf.features(fake).numpy(), self._real_features),
            "classes_covered": float(len(torch.unique(preds))),
            "inception_score": inception_score(probs),
        }
        if self.cfg.conditional:
            want = torch.arange(self.num_classes).repeat_interleave(PER_CLASS)
            clips = self.samples(len(want), seed=99, labels=want.to(self.g.device))
            out["cond_accuracy"] = float((clf.predict(self._mel(clips)) == want).float().mean())
            if self.judge is not None:
                # a spread of the same clips, every digit equally
                k = max(1, self.adv.judge_samples // self.num_classes)
                pick = torch.cat(
                    [torch.arange(c * PER_CLASS, c * PER_CLASS + k) for c in range(10)]
                )
                pcm = (clips[pick] * 32767).round().to(torch.int16).numpy()
                out["asr_accuracy"] = self.judge.accuracy(
                    pcm, want[pick].numpy(), self.cfg.sample_rate
                )
        return {**out, **self.reference}

    def pictures(self, directory: Path, step: int) -> list[Path]:
        """Log-mel spectrograms, a row per digit (or 100 unconditional), and one WAV per
        row's first clip."""
        if self.cfg.conditional:
            labels = torch.arange(self.num_classes).repeat_interleave(8).to(self.g.device)
            clips = self.samples(len(labels), seed=7, labels=labels)
            cols = 8
        else:
            clips, cols = self.samples(64, seed=7), 8
        if self.rank != 0:
            return []
        grid = save_grid(
            self._mel(clips).flip(2), directory / "spectrograms.png", cols=cols, scale=2
        )
        import soundfile

        wavs = directory / "samples"
        wavs.mkdir(parents=True, exist_ok=True)
        for row in range(len(clips) // cols):
            name = self.class_names[row] if self.cfg.conditional else f"{row:02d}"
            soundfile.write(
                wavs / f"{name}.wav", clips[row * cols].numpy(), self.cfg.sample_rate, "PCM_16"
            )
        return [grid]


def inception_score(probs: torch.Tensor) -> float:
    """exp E_x KL(p(y|x) || p(y)) from the classifier's class probabilities: 1 (one class, or
    no confidence) to the number of classes (confident and balanced)."""
    p = probs.double().clamp(min=1e-12)
    marginal = p.mean(0, keepdim=True)
    return float(torch.exp((p * (p.log() - marginal.log())).sum(1).mean()))
