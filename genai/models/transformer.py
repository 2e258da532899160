"""Causal language models from Hugging Face ``transformers``, and sampling with the KV cache.

Torch only: no Ray, no DeepSpeed. Training builds the model here; serving
loads a checkpoint and calls :func:`generate`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import (
    AutoModelForCausalLM,
    GPT2Config,
    LlamaConfig,
    PretrainedConfig,
    PreTrainedModel,
)

from genai.config import ModelSpec


def model_config(spec: ModelSpec, vocab_size: int, eos_id: int) -> PretrainedConfig:
    """The ``transformers`` config for a model built from scratch."""
    if spec.arch == "gpt2":
        return GPT2Config(
            vocab_size=vocab_size,
            n_positions=spec.max_position,
            n_embd=spec.n_embd,
            n_layer=spec.n_layer,
            n_head=spec.n_head,
            resid_pdrop=spec.dropout,
            embd_pdrop=spec.dropout,
            attn_pdrop=spec.dropout,
            bos_token_id=eos_id,
            eos_token_id=eos_id,
            pad_token_id=eos_id,
        )
    # Llama MLP width: ~8/3 * d rounded up to a multiple of 64, as in the Llama papers
    inter = spec.intermediate_size or 64 * ((8 * spec.n_embd // 3 + 63) // 64)
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=spec.n_embd,
        intermediate_size=inter,
        num_hidden_layers=spec.n_layer,
        num_attention_heads=spec.n_head,
        num_key_value_heads=spec.n_kv_head or spec.n_head,
        max_position_embeddings=spec.max_position,
        attention_dropout=spec.dropout,
        tie_word_embeddings=True,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
        pad_token_id=eos_id,
    )


def build_lm(spec: ModelSpec, vocab_size: int, eos_id: int) -> PreTrainedModel:
    """A fresh model from the spec, or a local pretrained one (never downloaded)."""
    if spec.pretrained_path:
        return AutoModelForCausalLM.from_pretrained(
            spec.pretrained_path,
            local_files_only=True,
            use_safetensors=True,
            attn_implementation="sdpa",
        )
    config = model_config(spec, vocab_size, eos_id)
    return AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")


def context_length(config: PretrainedConfig) -> int:
    return int(getattr(config, "n_positions", None) or config.max_position_embeddings)


@dataclass
class Generation:
    tokens: list[int]
    finish_reason: str  # "stop" (EOS or a stop string) or "length"


@torch.inference_mode()
def generate(
    model: PreTrainedModel,
    prompt_ids: Sequence[int],
    max_new_tokens: int,
    *,
    temperature: float = 1.0,
    top_p: float = 1.0,
    eos_id: int | None = None,
    seed: int | None = None,
    stop_check=None,
) -> Generation:
    """Sample up to ``max_new_tokens`` after the prompt, reusing the KV cache each step.

    ``temperature == 0`` is greedy. ``seed`` makes sampling reproducible without
    touching the global RNG (a per-call generator). ``stop_check(tokens)`` returning
    True ends generation (stop strings are checked by the caller on decoded text).
    """
    device = next(model.parameters()).device
    gen = torch.Generator(device=device)
    gen.manual_seed(seed if seed is not None else int(torch.randint(0, 2**62, (1,)).item()))
    ids = torch.tensor([list(prompt_ids)], dtype=torch.long, device=device)  # (1, T)
    past, out = None, []
    for _ in range(max_new_tokens):
        # logits_to_keep=1: only the last position's logits are needed (not (T, V) for the prompt)
        result = model(input_ids=ids, cache=past, use_cache=True, logits_to_keep=1)
        past = result.cache
        logits = result.logits[0, -1].float()  # (V,) next-token logits
        token = _sample(logits, temperature, top_p, gen)
        out.append(token)
        if eos_id is not None and token == eos_id:
            return Generation(out[:-1], "stop")
        if stop_check is not None and stop_check(out):
            return Generation(out, "stop")
        ids = torch.tensor(
            [[token]], dtype=torch.long, device=device
        )  # only the new token: cache holds the rest
    return Generation(out, "length")


def _sample(logits: torch.Tensor, temperature: float, top_p: float, gen: torch.Generator) -> int:
    if temperature <= 0:
        return int(logits.argmax())
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p < 1.0:
        sorted_p, order = probs.sort(descending=True)
        # keep the smallest prefix whose mass reaches top_p (always at least one token)
        keep = sorted_p.cumsum(0) - sorted_p < top_p
        sorted_p = sorted_p * keep
        choice = torch.multinomial(sorted_p / sorted_p.sum(), 1, generator=gen)
        return int(order[choice])
    return int(torch.multinomial(probs, 1, generator=gen))
