"""What one training step, one evaluation and one export mean, per model family.

A task owns its engines (one for an LM; two for a GAN), its data and its
metrics; the loop in ``loop.py`` only sequences them.
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch
import torch.distributed as dist
from safetensors import safe_open
from safetensors.torch import save_file

from genai.config import JobSpec
from genai.data.batches import BlockSampler, StepSampler, eval_batches, rank_share
from genai.data.images import to_model_range
from genai.models.gan import Discriminator, GANConfig, Generator, d_loss, g_loss
from genai.models.transformer import build_lm
from genai.models.vae import VAE, VAEConfig
from genai.pictures import save_grid
from genai.quality import Classifier, sample_quality
from genai.train.checkpoint import WEIGHTS
from genai.train.engine import Engine


def all_mean(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """Means over all workers of named scalars, in one all-reduce (not one per metric)."""
    if not dist.is_initialized():
        return dict(values)
    t = torch.tensor(list(values.values()), dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return dict(zip(values, (t / dist.get_world_size()).tolist(), strict=True))


class LMTask:
    """Causal language modelling on token blocks: loss is next-token cross-entropy (nats)."""

    unit = "tokens"

    def __init__(self, spec: JobSpec, data: dict[str, Any], rank: int, world_size: int) -> None:
        self.spec, self.rank, self.world_size = spec, rank, world_size
        train_tokens: np.ndarray = _get(data["train_ref"])
        val_tokens: np.ndarray = _get(data["val_ref"])
        self.tokenizer_files: dict[str, bytes] = data["tokenizer_files"]
        t, d = spec.train, spec.data
        self.sampler = BlockSampler(
            train_tokens,
            d.seq_len,
            t.micro_batch_size,
            t.grad_accum_steps,
            rank,
            world_size,
            t.seed,
        )
        self.val = eval_batches(
            val_tokens, d.seq_len, t.micro_batch_size, t.eval_batches, rank, world_size
        )
        model = build_lm(spec.model, data["vocab_size"], data["eos_id"])
        self.n_params = sum(p.numel() for p in model.parameters())
        self.engine = Engine(model, spec.deepspeed, spec.train, world_size)

    @property
    def engines(self) -> dict[str, Engine]:
        return {"model": self.engine}

    @property
    def items_per_step(self) -> int:
        return self.sampler.global_batch * self.spec.data.seq_len

    @property
    def lr(self) -> float:
        return self.engine.lr

    def describe(self) -> str:
        return f"{self.n_params / 1e6:.2f}M parameters, {self.items_per_step:,} tokens/step"

    def pictures(self, directory: Path, step: int) -> list[Path]:
        return []

    def train_step(self, step: int) -> dict[str, float]:
        self.engine.train()
        total = 0.0
        for micro in range(self.spec.train.grad_accum_steps):
            ids = self.sampler.batch(step, micro).to(self.engine.device)
            loss = self.engine(input_ids=ids, labels=ids).loss
            self.engine.backward(loss)
            self.engine.step()
            total += float(loss.detach())
        return all_mean({"loss": total / self.spec.train.grad_accum_steps}, self.engine.device)

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        self.engine.train(False)
        losses = [
            float(
                self.engine(
                    input_ids=b.to(self.engine.device), labels=b.to(self.engine.device)
                ).loss
            )
            for b in self.val
        ]
        return all_mean({"val_loss": sum(losses) / len(losses)}, self.engine.device)

    def export(self, directory: Path) -> dict[str, Any]:
        """Consolidated weights + HF config + tokenizer (collective: every rank calls)."""
        state = self.engine.full_state_dict()
        if self.rank != 0:
            return {}
        self.engine.module.save_pretrained(directory, state_dict=state)  # (it empties `state`)
        with safe_open(directory / "model.safetensors", "pt") as f:
            n_tensors = len(list(f.keys()))  # tied weights (lm_head ~ wte) are stored once
        for name, blob in self.tokenizer_files.items():
            (directory / name).write_bytes(blob)
        return {"n_tensors": n_tensors, "model_config": self.engine.module.config.to_dict()}


class ImageTask:
    """What GAN and VAE training share: image batches, per-rank eval images, the classifier."""

    unit = "images"

    def __init__(self, spec: JobSpec, data: dict[str, Any], rank: int, world_size: int) -> None:
        self.spec, self.rank, self.world_size = spec, rank, world_size
        self.train_q = _readonly_tensor(_get(data["train_ref"]))
        self.val_q = _readonly_tensor(_get(data["val_ref"]))
        self.train_y = _tensor_or_none(data.get("train_labels"))
        self.val_y = _tensor_or_none(data.get("val_labels"))
        self.levels, self.num_classes = data["levels"], data["num_classes"]
        self.class_names: list[str] = list(data.get("class_names") or [])
        self.classifier_path: str | None = data.get("classifier_path")
        self.classifier = None
        if data.get("classifier") is not None:
            self.classifier = Classifier(spec.model.channels, self.num_classes)
            self.classifier.load_state_dict(
                {k: torch.from_numpy(v) for k, v in data["classifier"].items()}
            )
            self.classifier.eval()
        t = spec.train
        self.sampler = StepSampler(
            len(self.train_q), t.micro_batch_size, 1, rank, world_size, t.seed
        )

    @property
    def items_per_step(self) -> int:
        return self.sampler.global_batch

    @property
    def dtype(self) -> torch.dtype:
        """The engines' parameter dtype; DeepSpeed does not cast inputs for us."""
        return torch.bfloat16 if self.spec.deepspeed.precision == "bf16" else torch.float32

    def _batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        idx = torch.from_numpy(self.sampler.indices(step))
        return self.train_q[idx], None if self.train_y is None else self.train_y[idx]

    def _export_engine(self, engine: Engine, path: Path) -> int:
        """Consolidated weights of one engine (collective); returns the tensor count on rank 0."""
        state = engine.full_state_dict()
        if self.rank == 0:
            save_file({k: v.contiguous() for k, v in state.items()}, path)
            return len(state)
        return 0


class GANTask(ImageTask):
    """Two DeepSpeed engines, G and D, each with its own optimizer (FACTS.md: the step that
    works under ZeRO 0-3). D: one forward over [real; fake.detach()], one backward. G: D frozen,
    D's logits on fresh fakes, backward/step on G only."""

    def __init__(self, spec: JobSpec, data: dict[str, Any], rank: int, world_size: int) -> None:
        super().__init__(spec, data, rank, world_size)
        m, g = spec.model, spec.gan
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
        self.reference = {k: data[k] for k in ("real_fd_floor", "classifier_accuracy") if k in data}

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
        d_total = sum(
            self.d_step(step * self.spec.gan.d_steps + k) for k in range(self.spec.gan.d_steps)
        )
        losses = {"d_loss": d_total / self.spec.gan.d_steps, "g_loss": self.g_step()}
        return all_mean(losses, self.g.device)

    def d_step(self, batch_index: int) -> float:
        """One forward of D over [real; fake.detach()] (ZeRO reduces D's gradients once), step D."""
        self.g.train()
        self.d.train()
        q, y = self._batch(batch_index)
        real = to_model_range(q, self.levels, "gan").to(self.d.device, dtype=self.dtype)
        y = None if y is None else y.to(self.d.device)
        n = len(real)
        fake_y = self._labels(n)
        with torch.no_grad():
            fake = self.g(
                torch.randn(n, self.cfg.latent_dim, device=self.g.device, dtype=self.dtype), fake_y
            )
        logits = self.d(torch.cat([real, fake]), None if y is None else torch.cat([y, fake_y]))
        loss = d_loss(logits[:n], logits[n:], self.spec.gan.loss)
        self.d.backward(loss)
        self.d.step()
        return float(loss.detach())

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
            loss = g_loss(self.d.forward_module()(fake, fake_y), self.spec.gan.loss)
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
        gen = torch.Generator().manual_seed(seed)
        z = torch.randn(n, self.cfg.latent_dim, generator=gen).to(self.g.device, dtype=self.dtype)
        if labels is None:
            labels = self._labels(n, gen)
        out = torch.cat(
            [self.g(zc, None if labels is None else lc) for zc, lc in _chunks(z, labels, 256)]
        )
        self.g.train(True)
        return ((out.float().cpu() + 1) / 2).clamp(0, 1)

    def evaluate(self) -> dict[str, float]:
        if self.classifier is None:
            return {}
        samples = self.samples(self.spec.gan.eval_samples, seed=1234)
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
        n_g = self._export_engine(self.g, directory / WEIGHTS)
        n_d = self._export_engine(self.d, directory / "discriminator.safetensors")
        return {
            "model_config": self.cfg.to_dict(),
            "class_names": self.class_names,
            "classifier_path": self.classifier_path,
            "n_tensors": n_g,
            "n_tensors_discriminator": n_d,
        }


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
        gen = torch.Generator().manual_seed(7)
        z = torch.randn(64, self.cfg.latent_dim, generator=gen).to(
            self.engine.device, dtype=self.dtype
        )
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
        n = self._export_engine(self.engine, directory / WEIGHTS)
        return {"model_config": self.cfg.to_dict(), "class_names": self.class_names, "n_tensors": n}


def full_params(engine: Engine):
    """Call module methods other than forward with whole parameters: under ZeRO-3 they are
    partitioned, and GatheredParameters materialises them (read-only; every rank must enter)."""
    if engine.zero_stage < 3:
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(list(engine.module.parameters()))


def _chunks(z: torch.Tensor, labels: torch.Tensor | None, size: int):
    for i in range(0, len(z), size):
        yield z[i : i + size], None if labels is None else labels[i : i + size]


def _get(ref: Any) -> Any:
    """Arrays arrive as object-store refs from the driver (or as themselves, in tests)."""
    return ray.get(ref) if isinstance(ref, ray.ObjectRef) else ref


def _readonly_tensor(array: np.ndarray) -> torch.Tensor:
    # Object-store arrays are read-only views of shared memory; we only ever index them,
    # so share rather than copy (torch warns about non-writable arrays regardless).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(np.asarray(array))


def _tensor_or_none(ref: Any) -> torch.Tensor | None:
    return None if ref is None else _readonly_tensor(_get(ref))


def make_task(spec: JobSpec, data: dict[str, Any], rank: int, world_size: int):
    family = spec.model.family
    return {"lm": LMTask, "gan": GANTask, "vae": VAETask}[family](spec, data, rank, world_size)
