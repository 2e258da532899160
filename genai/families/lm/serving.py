"""Serving side of the LM family: load a checkpoint, one deployment per LM checkpoint.

Loads ``meta.json`` + ``model.safetensors`` + tokenizer files and nothing else:
never training code, never a pickle (a ``pytorch_model.bin`` dropped into a
checkpoint is ignored). The model is built from ``config.json``.
"""

from __future__ import annotations

import asyncio
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from ray import serve
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerFast

from genai.checkpoint import WEIGHTS, Meta, open_for_inference
from genai.models.transformer import context_length, generate
from genai.serve import metrics
from genai.serve.cards import lineage_card


@dataclass
class LoadedLM:
    name: str
    path: Path
    meta: Meta
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerFast


def load_lm(path: str | Path, dtype: torch.dtype = torch.float32) -> LoadedLM:
    directory, meta = open_for_inference(path, "lm")
    config = AutoConfig.from_pretrained(directory, local_files_only=True)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa", dtype=dtype)
    state = load_file(directory / WEIGHTS)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected:
        raise ValueError(f"{directory / WEIGHTS}: unexpected tensors {unexpected[:5]}")
    model.tie_weights()
    # A key may be absent from the file only if it is tied to one that was loaded (lm_head ~ wte).
    loaded_ptrs = {p.data_ptr() for n, p in model.state_dict().items() if n in state}
    untied = [k for k in missing if model.state_dict()[k].data_ptr() not in loaded_ptrs]
    if untied:
        raise ValueError(f"{directory / WEIGHTS}: missing tensors {untied[:5]}")
    model.eval()
    tokenizer = PreTrainedTokenizerFast.from_pretrained(directory, local_files_only=True)
    return LoadedLM(name=meta.name, path=directory, meta=meta, model=model, tokenizer=tokenizer)


class PromptTooLong(ValueError):
    pass


@serve.deployment
class LanguageModel:
    """Holds one model; ``complete`` takes a validated request dict and returns a completion."""

    def __init__(self, checkpoint: str) -> None:
        # each replica gets a fraction of a core; more torch threads than that only contend
        torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
        self.lm = load_lm(checkpoint)
        self.context = context_length(self.lm.model.config)
        self.eos_id = self.lm.tokenizer.eos_token_id
        self._lock = threading.Lock()  # one generation at a time per replica: they share the cores

    def info(self) -> dict[str, Any]:
        return {
            "id": self.lm.name,
            "family": "lm",
            "step": self.lm.meta.step,
            "lineage": lineage_card(self.lm.meta),
            "context_length": self.context,
            "created": int(self.lm.path.stat().st_mtime),
        }

    async def complete(self, req: dict[str, Any]) -> dict[str, Any]:
        return await asyncio.to_thread(self._complete, req)

    def _complete(self, req: dict[str, Any]) -> dict[str, Any]:
        tok = self.lm.tokenizer
        prompt_ids = tok(req["prompt"], add_special_tokens=False)["input_ids"] or [self.eos_id]
        if len(prompt_ids) + req["max_tokens"] > self.context:
            raise PromptTooLong(
                f"prompt ({len(prompt_ids)} tokens) + max_tokens ({req['max_tokens']}) exceeds "
                f"the model's context length ({self.context})"
            )
        stops = [req["stop"]] if isinstance(req.get("stop"), str) else list(req.get("stop") or [])

        def stop_check(tokens: list[int]) -> bool:
            if not stops:
                return False
            tail = tok.decode(tokens[-16:])  # stop strings are <= 64 chars; 16 tokens covers most
            return any(s in tail for s in stops)

        with self._lock:
            out = generate(
                self.lm.model,
                prompt_ids,
                req["max_tokens"],
                temperature=req["temperature"],
                top_p=req["top_p"],
                eos_id=self.eos_id,
                seed=req.get("seed"),
                stop_check=stop_check,
            )
        text = tok.decode(out.tokens)
        for s in stops:  # OpenAI semantics: the stop sequence is not part of the text
            if s in text:
                text = text[: text.index(s)]
        metrics.tokens_total().inc(len(prompt_ids), tags={"model": self.lm.name, "kind": "prompt"})
        metrics.tokens_total().inc(
            len(out.tokens), tags={"model": self.lm.name, "kind": "completion"}
        )
        return {
            "text": text,
            "finish_reason": out.finish_reason,
            "prompt_tokens": len(prompt_ids),
            "completion_tokens": len(out.tokens),
        }


def deployment(directory: Path, meta: Meta, spec: Any, options: dict[str, Any]):
    """A bound ``LanguageModel`` deployment for one checkpoint."""
    return LanguageModel.options(name=f"lm-{meta.name}", **options).bind(str(directory))
