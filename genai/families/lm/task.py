"""Worker side of the LM family: next-token cross-entropy on token blocks."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open

from genai.checkpoint import WEIGHTS
from genai.config import JobSpec
from genai.data.batches import BlockSampler, eval_batches
from genai.data.stream import StreamSampler
from genai.models.transformer import build_lm
from genai.train.engine import Engine
from genai.train.worker import all_mean, get_ref


class LMTask:
    """Causal language modelling on token blocks: loss is next-token cross-entropy (nats)."""

    unit, unit_label = "tokens", "tok"

    def __init__(self, spec: JobSpec, data: dict[str, Any], rank: int, world_size: int) -> None:
        self.spec, self.rank, self.world_size = spec, rank, world_size
        val_tokens: np.ndarray = get_ref(data["val_ref"])
        self.tokenizer_files: dict[str, bytes] = data["tokenizer_files"]
        self.token_bytes = torch.from_numpy(np.asarray(data["token_bytes"]))
        self.xz_bpb: float | None = data.get("xz_bpb")
        t, d = spec.train, spec.data
        batching = (d.seq_len, t.micro_batch_size, t.grad_accum_steps, rank, world_size, t.seed)
        self.sampler: StreamSampler | BlockSampler
        if "train_shards" in data:  # data.streaming
            self.sampler = StreamSampler(data["train_shards"], *batching)
        else:
            self.sampler = BlockSampler(get_ref(data["train_ref"]), *batching)
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
        """Held-out loss in nats per token, and in bits per UTF-8 byte of the text it covers
        (comparable across tokenizers, and with a compressor: ``xz_bpb`` on the same text)."""
        self.engine.train(False)
        nats = tokens = n_bytes = 0.0
        for b in self.val:
            ids = b.to(self.engine.device)
            loss = float(self.engine(input_ids=ids, labels=ids).loss)
            targets = b[:, 1:]  # (B, L-1): the tokens the loss predicts
            nats += loss * targets.numel()
            tokens += targets.numel()
            n_bytes += float(self.token_bytes[targets].sum())
        sums = all_mean({"nats": nats, "tokens": tokens, "bytes": n_bytes}, self.engine.device)
        out = {
            "val_loss": sums["nats"] / sums["tokens"],
            "val_bpb": sums["nats"] / math.log(2) / max(1.0, sums["bytes"]),
        }
        if self.xz_bpb:
            out["xz_bpb"] = self.xz_bpb
            out["bpb_vs_xz"] = out["val_bpb"] / self.xz_bpb
        return out

    def export(self, directory: Path) -> dict[str, Any]:
        """Consolidated weights + HF config + tokenizer (collective: every rank calls)."""
        state = self.engine.full_state_dict()
        if self.rank != 0:
            return {}
        self.engine.module.save_pretrained(directory, state_dict=state)  # (it empties `state`)
        with safe_open(directory / WEIGHTS, "pt") as f:
            n_tensors = len(list(f.keys()))  # tied weights (lm_head ~ wte) are stored once
        for name, blob in self.tokenizer_files.items():
            (directory / name).write_bytes(blob)
        return {"n_tensors": n_tensors, "model_config": self.engine.module.config.to_dict()}
