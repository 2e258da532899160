"""Worker side of the LM family: next-token cross-entropy on token blocks."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open

from genai.checkpoint import ADAPTER, DATASET, WEIGHTS, file_sha256
from genai.config import JobSpec
from genai.data.batches import BlockSampler, StepSampler, eval_batches
from genai.data.stream import StreamSampler
from genai.models.transformer import build_lm
from genai.train.engine import Engine
from genai.train.worker import all_mean, get_ref


class LMTask:
    """Causal language modelling on token blocks: loss is next-token cross-entropy (nats)."""

    unit, unit_label = "tokens", "tok"

    def __init__(self, spec: JobSpec, data: dict[str, Any], rank: int, world_size: int) -> None:
        self.spec, self.rank, self.world_size = spec, rank, world_size
        self.tokenizer_files: dict[str, bytes] = data["tokenizer_files"]
        self.token_bytes = torch.from_numpy(np.asarray(data["token_bytes"]))
        self.xz_bpb: float | None = data.get("xz_bpb")
        t, d = spec.train, spec.data
        batching = (d.seq_len, t.micro_batch_size, t.grad_accum_steps, rank, world_size, t.seed)
        self.sampler: StreamSampler | BlockSampler | ChatSampler
        self.val: list[dict[str, torch.Tensor]]
        if "chat_train_ref" in data:  # data.format: chat
            self.sampler = ChatSampler(get_ref(data["chat_train_ref"]), *batching[1:])
            self.val = chat_eval_batches(
                get_ref(data["chat_val_ref"]), t.micro_batch_size, t.eval_batches, rank, world_size
            )
        else:
            if "train_shards" in data:  # data.streaming
                self.sampler = StreamSampler(data["train_shards"], *batching)
            else:
                self.sampler = BlockSampler(get_ref(data["train_ref"]), *batching)
            val = eval_batches(
                get_ref(data["val_ref"]),
                d.seq_len,
                t.micro_batch_size,
                t.eval_batches,
                rank,
                world_size,
            )
            self.val = [{"input_ids": b, "labels": b} for b in val]
        self.base: dict[str, Any] | None = data.get("base")
        self.dataset: dict[str, Any] | None = data.get("dataset")
        model = build_lm(spec.model, data["vocab_size"], data["eos_id"])
        if spec.model.lora is not None:
            model = with_lora(model, spec.model.lora, self.base)
        self.n_params = sum(p.numel() for p in model.parameters())
        self.n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
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
        lora = ""
        if self.spec.model.lora is not None:
            lora = f" (LoRA: {self.n_trainable / 1e6:.2f}M trained)"
        return f"{self.n_params / 1e6:.2f}M parameters{lora}, {self.items_per_step:,} tokens/step"

    def pictures(self, directory: Path, step: int) -> list[Path]:
        return []

    def _forward(self, batch: dict[str, torch.Tensor]) -> Any:
        # no KV cache: training never reuses one, and transformers reads packed chat blocks'
        # boundaries from position_ids only when there is none
        inputs = {k: v.to(self.engine.device) for k, v in batch.items()}
        return self.engine(**inputs, use_cache=False)

    def train_step(self, step: int) -> dict[str, float]:
        self.engine.train()
        total = 0.0
        for micro in range(self.spec.train.grad_accum_steps):
            batch = self.sampler.batch(step, micro)
            if isinstance(batch, torch.Tensor):
                batch = {"input_ids": batch, "labels": batch}
            loss = self._forward(batch).loss
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
            loss = float(self._forward(b).loss)
            labels = b["labels"][:, 1:]  # (B, L-1): the tokens the loss predicts
            targets = labels[labels >= 0]  # chat: the assistant's only
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
        """Consolidated weights + HF config + tokenizer (collective: every rank calls); a
        LoRA run's adapter instead of the weights (and, if asked, the merged model too)."""
        state = self.engine.full_state_dict()
        if self.rank != 0:
            return {}
        for name, blob in self.tokenizer_files.items():
            (directory / name).write_bytes(blob)
        module = self.engine.module
        record: dict[str, Any] = {"base": self.base}
        if self.dataset:
            # the manifest: which documents this model trained on, which it held out
            (directory / DATASET).write_bytes(self.dataset["manifest"])
            record["dataset"] = {"version": self.dataset["version"], "file": DATASET}
        if self.spec.model.lora is not None:
            assert state is not None
            module.save_pretrained(directory, state_dict=state)  # the adapter's tensors only
            with safe_open(directory / ADAPTER, "pt") as f:
                record["n_tensors"] = len(list(f.keys()))
            record["adapter"] = self.spec.model.lora.model_dump(mode="json")
            record["adapter_sha256"] = file_sha256(directory / ADAPTER)
            record["model_config"] = module.get_base_model().config.to_dict()
            if not self.spec.model.lora.merged_export:
                return record
            module = merged(module, state)
            state = module.state_dict()
        module.save_pretrained(directory, state_dict=state)  # (it empties `state`)
        with safe_open(directory / WEIGHTS, "pt") as f:
            n_tensors = len(list(f.keys()))  # tied weights (lm_head ~ wte) are stored once
        record.setdefault("n_tensors", n_tensors)
        record.setdefault("model_config", module.config.to_dict())
        return {**record, "weights_sha256": file_sha256(directory / WEIGHTS)}


class ChatSampler(StepSampler):
    """Packed chat blocks (genai/families/lm/chat.py), shuffled per epoch like token blocks."""

    def __init__(self, blocks: dict[str, np.ndarray], *batching: int) -> None:
        self.blocks = blocks
        super().__init__(len(blocks["input_ids"]), *batching)

    def batch(self, step: int, micro: int) -> dict[str, torch.Tensor]:
        idx = self.indices(step, micro)
        return {k: torch.from_numpy(v[idx].astype(np.int64)) for k, v in self.blocks.items()}


def chat_eval_batches(
    blocks: dict[str, np.ndarray], micro: int, n_batches: int | None, rank: int, world: int
) -> list[dict[str, torch.Tensor]]:
    from genai.data.batches import rank_share

    n = len(blocks["input_ids"])
    mine = rank_share(n, n if n_batches is None else n_batches * micro, rank, world)
    if len(mine) == 0:
        raise ValueError(f"{n} held-out chat blocks for {world} workers: raise data.val_fraction")
    return [
        {k: torch.from_numpy(v[mine[i : i + micro]].astype(np.int64)) for k, v in blocks.items()}
        for i in range(0, len(mine), micro)
    ]


def with_lora(model: Any, lora: Any, base: dict[str, Any] | None) -> Any:
    """``model`` with peft LoRA adapters (the base frozen); the adapter config names the
    base by its path."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        task_type="CAUSAL_LM",
        base_model_name_or_path=(base or {}).get("path"),
    )
    return get_peft_model(model, config)


def merged(peft_model: Any, state: dict[str, torch.Tensor]) -> Any:
    """A standalone model: the base loaded afresh with the adapter merged into its weights
    (rank 0; the engine's own module is left alone: under ZeRO-3 it holds partitions)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    config = peft_model.peft_config["default"]
    base = AutoModelForCausalLM.from_pretrained(
        config.base_model_name_or_path, local_files_only=True, use_safetensors=True
    )
    wrapped = PeftModel(base, config)
    lora = {k: v.float() for k, v in state.items() if "lora_" in k}
    unexpected = wrapped.load_state_dict(lora, strict=False).unexpected_keys
    if unexpected:
        raise ValueError(f"adapter tensors that fit no module: {unexpected[:3]}")
    return wrapped.merge_and_unload()
