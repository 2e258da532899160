"""Worker side of the GAN family: two DeepSpeed engines, G and D."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from genai.checkpoint import WEIGHTS
from genai.config import JobSpec
from genai.data.images import to_model_range
from genai.families.gan import GANSpec
from genai.families.images.task import ImageTask
from genai.models.gan import Discriminator, GANConfig, Generator, d_loss, g_loss
from genai.pictures import save_grid
from genai.quality import sample_quality
from genai.train.engine import Engine
from genai.train.worker import all_mean


class GANTask(ImageTask):
    """Two DeepSpeed engines, G and D, each with its own optimizer, in the one step shape that
    runs under ZeRO 0-3 (two D forwards in one backward fail: a gradient reduced twice).
    D: one forward over [real; fake.detach()], one backward. G: D frozen, D's logits on
    fresh fakes, backward/step on G only."""

    def __init__(self, spec: JobSpec, data: dict[str, Any], rank: int, world_size: int) -> None:
        super().__init__(spec, data, rank, world_size)
        m, g = spec.model, spec.gan
        # the adversarial settings: a family that reuses these two engines (audio) sets its own
        self.adv: GANSpec = g
        if m.conditional and self.train_y is None:
            raise ValueError(
                "model.conditional needs labelled data (digits, class folders, data.label_column)"
            )
        if m.conditional and self.num_classes != m.num_classes:
            raise ValueError(
                f"model.num_classes ({m.num_classes}) != classes in the data ({self.num_classes})"
            )
        self.cfg = GANConfig(**m.model_dump(exclude={"family"}))
        torch.manual_seed(spec.train.seed)  # same initial weights on every rank
        gen, disc = Generator(self.cfg), Discriminator(self.cfg)
        self.n_params = sum(p.numel() for p in gen.parameters()) + sum(
            p.numel() for p in disc.parameters()
        )
        ds, t = spec.deepspeed, spec.train
        self.g = Engine(
            gen, ds, t, world_size, lr=g.g_lr, betas=(g.beta1, g.beta2), weight_decay=0.0
        )
        self.d = Engine(
            disc, ds, t, world_size, lr=g.d_lr, betas=(g.beta1, g.beta2), weight_decay=0.0
        )
        # constants that put the FD in context (computed once by the driver)
        self.reference: dict[str, float] = {
            k: data[k] for k in ("real_fd_floor", "classifier_accuracy") if k in data
        }

    @property
    def engines(self) -> dict[str, Engine]:
        return {"generator": self.g, "discriminator": self.d}

    @property
    def lr(self) -> float:
        return self.g.lr

    def describe(self) -> str:
        kind = "conditional " if self.cfg.conditional else ""
        return (
            f"{kind}GAN, {self.n_params / 1e6:.2f}M parameters, {self.items_per_step} images/step"
        )

    def _labels(self, n: int, gen: torch.Generator | None = None) -> torch.Tensor | None:
        if not self.cfg.conditional:
            return None
        return torch.randint(0, self.cfg.num_classes, (n,), generator=gen).to(self.g.device)

    def train_step(self, step: int) -> dict[str, float]:
        d_total = sum(self.d_step(step * self.adv.d_steps + k) for k in range(self.adv.d_steps))
        losses = {"d_loss": d_total / self.adv.d_steps, "g_loss": self.g_step()}
        return all_mean(losses, self.g.device)

    def d_step(self, batch_index: int) -> float:
        """One forward of D over [real; fake.detach()] (ZeRO reduces D's gradients once), step D."""
        self.g.train()
        self.d.train()
        real, y = self.real_batch(batch_index)
        y = None if y is None else y.to(self.d.device)
        n = len(real)
        fake_y = self._labels(n)
        with torch.no_grad():
            fake = self.g(
                torch.randn(n, self.cfg.latent_dim, device=self.g.device, dtype=self.dtype), fake_y
            )
        labels = None if y is None or fake_y is None else torch.cat([y, fake_y])
        logits = self.d(torch.cat([real, fake]), labels)
        loss = d_loss(logits[:n], logits[n:], self.adv.loss)
        self.d.backward(loss)
        self.d.step()
        return float(loss.detach())

    def real_batch(self, batch_index: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """A micro-batch of real data as D reads it (on D's device, in [-1, 1]), and its
        labels."""
        q, y = self._batch(batch_index)
        return to_model_range(q, self.levels, "gan").to(self.d.device, dtype=self.dtype), y

    def g_step(self) -> float:
        """D frozen, so no gradient reaches (or is reduced for) its parameters; step G only."""
        self.g.train()
        d_params = list(self.d.module.parameters())
        for p in d_params:
            p.requires_grad_(False)
        try:
            n = self.spec.train.micro_batch_size
            fake_y = self._labels(n)
            fake = self.g(
                torch.randn(n, self.cfg.latent_dim, device=self.g.device, dtype=self.dtype), fake_y
            )
            loss = g_loss(self.d.forward_module()(fake, fake_y), self.adv.loss)
            self.g.backward(loss)
            self.g.step()
        finally:
            for p in d_params:
                p.requires_grad_(True)
        return float(loss.detach())

    @torch.no_grad()
    def samples(self, n: int, seed: int, labels: torch.Tensor | None = None) -> torch.Tensor:
        """n images in [0, 1] from a fixed seed; every rank computes the same (collective under ZeRO-3)."""
        self.g.train(False)
        z, labels = self.g.module.latents(n, torch.Generator().manual_seed(seed), labels)
        z = z.to(self.g.device, dtype=self.dtype)
        labels = None if labels is None else labels.to(self.g.device)
        out = torch.cat(
            [self.g(zc, None if labels is None else lc) for zc, lc in _chunks(z, labels, 256)]
        )
        self.g.train(True)
        return Generator.to_unit(out.float().cpu()).clamp(0, 1)

    def evaluate(self) -> dict[str, float]:
        if self.classifier is None:
            return {}
        samples = self.samples(self.adv.eval_samples, seed=1234)
        real_val = to_model_range(self.val_q, self.levels, "unit")
        out = sample_quality(self.classifier, samples, real_val, self.num_classes)
        if self.cfg.conditional:
            per = 100
            want = torch.arange(self.num_classes).repeat_interleave(per)
            got = self.classifier.predict(
                self.samples(len(want), seed=99, labels=want.to(self.g.device))
            )
            out["cond_accuracy"] = float((got == want).float().mean())
        return {**out, **self.reference}

    def pictures(self, directory: Path, step: int) -> list[Path]:
        if self.cfg.conditional:  # one row per class
            labels = torch.arange(self.cfg.num_classes).repeat_interleave(10).to(self.g.device)
            grid = self.samples(len(labels), seed=7, labels=labels)
        else:
            grid = self.samples(100, seed=7)
        if self.rank != 0:
            return []
        return [save_grid(grid, directory / "samples.png", cols=10)]

    def export(self, directory: Path) -> dict[str, Any]:
        n_g = self.g.export(directory / WEIGHTS)
        n_d = self.d.export(directory / "discriminator.safetensors")
        return {
            **self._export_classifier(directory),
            "model_config": self.cfg.to_dict(),
            "class_names": self.class_names,
            "n_tensors": n_g,
            "n_tensors_discriminator": n_d,
        }


def _chunks(z: torch.Tensor, labels: torch.Tensor | None, size: int):
    for i in range(0, len(z), size):
        yield z[i : i + size], None if labels is None else labels[i : i + size]
