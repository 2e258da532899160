"""Causal language models from Hugging Face ``transformers``.

Torch only: no Ray, no DeepSpeed. Training builds the model here; serving loads
a checkpoint and decodes with :mod:`genai.decoding`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from transformers import (
    AutoModelForCausalLM,
    GPT2Config,
    LlamaConfig,
    PretrainedConfig,
    PreTrainedModel,
)

if TYPE_CHECKING:  # the model file reads the family's spec; it does not import the family
    from genai.families.lm import ModelSpec


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
