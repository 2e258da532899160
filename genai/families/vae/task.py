"""Worker side of the VAE family: the ELBO, in nats per image."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from genai.checkpoint import WEIGHTS
from genai.config import JobSpec
from genai.data.batches import rank_share
from genai.data.images import to_model_range
from genai.families.images.task import ImageTask
from genai.models.vae import VAE, VAEConfig
from genai.pictures import save_grid
from genai.train.engine import Engine
from genai.train.worker import all_mean, full_params


class VAETask(ImageTask):
    """ELBO with optional KL warm-up; every number in nats per image."""

    def __init__(self, spec: JobSpec, data: dict[str, Any], rank: int, world_size: int) -> None:
        super().__init__(spec, data, rank, world_size)
        self.cfg = VAEConfig(**spec.model.model_dump(exclude={"family"}))
        self.target = "dequant" if self.cfg.likelihood == "gaussian" else "unit"
        torch.manual_seed(spec.train.seed)
        model = VAE(self.cfg)
        self.n_params = sum(p.numel() for p in model.parameters())
        self.engine = Engine(model, spec.deepspeed, spec.train, world_size)
        self.baseline_nll = data.get("baseline_nll")
        # fixed dequantization noise for evaluation, so evaluations are comparable
        mine = torch.from_numpy(rank_share(len(self.val_q), len(self.val_q), rank, world_size))
        self.val_x = to_model_range(
            self.val_q[mine], self.levels, self.target, torch.Generator().manual_seed(5)
        )

    @property
    def engines(self) -> dict[str, Engine]:
        return {"vae": self.engine}

    @property
    def lr(self) -> float:
        return self.engine.lr

    def describe(self) -> str:
        return f"VAE ({self.cfg.likelihood}), {self.n_params / 1e6:.2f}M parameters, {self.items_per_step} images/step"

    def _x(self, q: torch.Tensor, seed: int) -> torch.Tensor:
        x = to_model_range(q, self.levels, self.target, torch.Generator().manual_seed(seed))
        return x.to(self.engine.device, dtype=self.dtype)

    def train_step(self, step: int) -> dict[str, float]:
        self.engine.train()
        q, _ = self._batch(step)
        out = self.engine(self._x(q, seed=step * self.world_size + self.rank))
        warm = self.spec.vae.kl_warmup_steps
        beta = min(1.0, (step + 1) / warm) if warm else 1.0
        loss = (out["recon"] + beta * out["kl"]).mean()
        self.engine.backward(loss)
        self.engine.step()
        means = {k: float(out[k].float().mean()) for k in ("neg_elbo", "recon", "kl")}
        return {**all_mean(means, self.engine.device), "kl_weight": beta}

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        self.engine.train(False)
        x = self.val_x.to(self.engine.device, dtype=self.dtype)
        torch.manual_seed(11)
        out = self.engine(x)
        k_images = x[: max(1, self.spec.vae.eval_images // self.world_size)]
        with full_params(self.engine):
            iw = self.engine.module.iw_bound(k_images, k=self.spec.vae.iw_samples)
        means = {f"val_{k}": float(out[k].float().mean()) for k in ("neg_elbo", "recon", "kl")}
        means[f"val_iw{self.spec.vae.iw_samples}_bound"] = float(iw.float().mean())
        metrics = all_mean(means, self.engine.device)
        if self.baseline_nll is not None:
            metrics["baseline_gaussian_nll"] = self.baseline_nll
        return metrics

    def pictures(self, directory: Path, step: int) -> list[Path]:
        self.engine.train(False)
        z, _ = self.engine.module.latents(64, torch.Generator().manual_seed(7))
        z = z.to(self.engine.device, dtype=self.dtype)
        inputs = to_model_range(self.val_q[:32], self.levels, "unit").to(
            self.engine.device, dtype=self.dtype
        )
        with full_params(self.engine):
            samples = self.engine.module.mean_image(z)
            recon = self.engine.module.reconstruct(inputs)
        if self.rank != 0:
            return []
        pairs = torch.stack([inputs.float().cpu(), recon.float().cpu()], 1).flatten(
            0, 1
        )  # input, recon, ...
        return [
            save_grid(samples.float().cpu(), directory / "samples.png", cols=8),
            save_grid(pairs, directory / "reconstructions.png", cols=8),
        ]

    def export(self, directory: Path) -> dict[str, Any]:
        n = self.engine.export(directory / WEIGHTS)
        return {
            **self._export_classifier(directory),
            "model_config": self.cfg.to_dict(),
            "class_names": self.class_names,
            "n_tensors": n,
        }
