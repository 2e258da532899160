"""The language-model family: a Hugging Face causal LM trained on a text corpus."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from genai.data.dedup import DedupSpec
from genai.families.base import Family
from genai.families.lm.schemas import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionRequest,
    CompletionResponse,
    LMCard,
    LMLog,
)
from genai.serve.api import Route
from genai.specbase import PathField, Section


class LoraSpec(Section):
    """LoRA with ``peft``: the base stays frozen, low-rank adapters on ``target_modules``
    train; the checkpoint holds the adapter (``adapter_model.safetensors``)."""

    r: int = Field(8, ge=1, le=1024, description="the adapters' rank")
    alpha: float = Field(16.0, gt=0, description="scale: the update is alpha/r * B @ A")
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear",
        description="module names to adapt (e.g. [q_proj, v_proj]); all-linear: every "
        "linear layer but the output head",
    )
    merged_export: bool = Field(
        False, description="also write the merged model.safetensors (a standalone model)"
    )


class ModelSpec(Section):
    """The network. ``family: lm`` is a Hugging Face causal LM."""

    family: Literal["lm"] = "lm"
    arch: Literal["gpt2", "llama"] = Field(
        "gpt2", description="transformers architecture built from config"
    )
    pretrained_path: str | None = PathField(
        None, description="local from_pretrained directory to fine-tune; overrides the shape fields"
    )
    n_layer: int = Field(4, ge=1, le=256)
    n_embd: int = Field(256, ge=8, le=65536)
    n_head: int = Field(4, ge=1, le=1024)
    n_kv_head: int | None = Field(None, ge=1, description="llama only: grouped-query KV heads")
    intermediate_size: int | None = Field(
        None, ge=8, description="llama MLP width (default ~8/3*n_embd, rounded to 64)"
    )
    max_position: int = Field(512, ge=16, le=1 << 20, description="context length of the model")
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    lora: LoraSpec | None = Field(
        None,
        description="fine-tune low-rank adapters instead of every weight (needs pretrained_path)",
    )

    @model_validator(mode="after")
    def _heads_divide(self) -> ModelSpec:
        if self.n_embd % self.n_head:
            raise ValueError(
                f"n_embd ({self.n_embd}) must be divisible by model.n_head ({self.n_head})"
            )
        if self.n_kv_head is not None and self.n_head % self.n_kv_head:
            raise ValueError(
                f"n_head ({self.n_head}) must be divisible by model.n_kv_head ({self.n_kv_head})"
            )
        return self


class TokenizerSpec(Section):
    """Byte-level BPE trained on the corpus, or a local pretrained tokenizer."""

    path: str | None = PathField(
        None, description="local tokenizer directory (AutoTokenizer); else train one"
    )
    vocab_size: int = Field(8192, ge=260, le=1 << 20)


class DataSpec(Section):
    """Text corpus. ``source: stdlib`` is the Python standard library's own source (offline)."""

    kind: Literal["text"] = "text"
    source: str = PathField(
        "stdlib", description="'stdlib', a file, a directory or a glob", keywords=("stdlib",)
    )
    format: Literal["auto", "text", "jsonl", "parquet", "tokens", "chat"] = Field(
        "auto",
        description="'tokens': Parquet files already tokenized (an integer column 'tokens', "
        "one token per row) with data.tokenizer.path; read in place, never re-tokenized. "
        "'chat': JSONL of {messages: [{role, content}]}, rendered with the tokenizer's chat "
        "template, loss on assistant tokens only, packed per data.pack",
    )
    pack: bool = Field(
        True,
        description="chat: several conversations per seq_len block (attention never crosses "
        "from one into another); false: one conversation per block, padded",
    )
    text_field: str = Field("text", description="JSONL key / Parquet column holding the text")
    include: list[str] = Field(
        default_factory=lambda: ["*.py"], description="globs for directory sources"
    )
    max_bytes: int = Field(8_000_000, ge=1_000, description="cap on corpus size read")
    seq_len: int = Field(128, ge=8, le=1 << 20)
    val_fraction: float = Field(0.05, gt=0.0, lt=0.5)
    tokenizer: TokenizerSpec = Field(default_factory=TokenizerSpec)
    cache_dir: str = PathField(
        ".genai_cache", description="tokenized shards are cached here, keyed by content"
    )
    shard_tokens: int = Field(
        1 << 20, ge=1024, description="training tokens per Parquet shard (the unit streamed)"
    )
    streaming: bool = Field(
        False,
        description="each worker streams its share of the token shards with Ray Data "
        "(bounded memory) instead of holding the whole corpus; cache_dir must then be on "
        "storage every node sees",
    )
    seed: int = Field(0, ge=0)
    dedup: DedupSpec = Field(
        default_factory=DedupSpec,
        description="exact and near-duplicate removal (text corpora), before the split",
    )
    synthetic: str | None = PathField(
        None,
        description="a corpus of generated text (`genai generations export --dataset`), "
        "trained on beside the real source and marked synthetic in the manifest",
    )
    hold_out_synthetic: bool = Field(
        False, description="true: synthetic documents may be held out too (default: real only)"
    )


class DecodingSpec(Section):
    """Continuous batching of LM requests inside a replica (genai/decoding/)."""

    max_batch_size: int = Field(
        32, ge=1, le=1024, description="sequences decoded together; more requests queue"
    )
    max_batch_tokens: int = Field(
        16384,
        ge=16,
        description="cap on prompt + max_tokens summed over the batch (KV cache memory)",
    )
    lean_forward: bool = Field(
        True,
        description="decode GPT-2 checkpoints with genai's lean forward pass (same weights and "
        "arithmetic as transformers', less per-step overhead); false: transformers' own",
    )


COMPLETIONS = Route(
    path="/v1/completions",
    request=CompletionRequest,
    response=CompletionResponse,
    id_prefix="cmpl",
    gateway="genai.families.lm.routes:completions",
    replica="genai.families.lm.replica:complete",
    replica_stream="genai.families.lm.replica:stream",
)
CHAT = Route(
    path="/v1/chat/completions",
    request=ChatCompletionRequest,
    response=ChatCompletionResponse,
    id_prefix="chatcmpl",
    gateway="genai.families.lm.routes:chat_completions",
    replica="genai.families.lm.replica:complete",
    replica_stream="genai.families.lm.replica:stream",
)


def _check(spec: Any) -> None:
    model, data = spec.model, spec.data
    if model.pretrained_path is None and data.seq_len > model.max_position:
        raise ValueError(
            f"data.seq_len ({data.seq_len}) must be <= model.max_position ({model.max_position})"
        )
    if model.lora is not None and model.pretrained_path is None:
        raise ValueError("model.lora needs model.pretrained_path: adapters train over a base")
    if data.format == "chat" and data.tokenizer.path is None and model.pretrained_path is None:
        raise ValueError(
            "data.format: chat needs a tokenizer with a chat template: set "
            "model.pretrained_path (its tokenizer is used) or data.tokenizer.path"
        )


FAMILY = Family(
    name="lm",
    model_spec=ModelSpec,
    data_spec=DataSpec,
    # bits per byte, not nats per token: comparable across tokenizers (a sweep may change them)
    objective=("val_bpb", "min"),
    metrics=("val_loss", "val_bpb", "bpb_vs_xz", "loss", "tokens_per_s"),
    lr_keys=("train.lr",),
    prepare="genai.families.lm.data:prepare",
    task="genai.families.lm.task:LMTask",
    server="genai.families.lm.serving:server",
    check=_check,
    routes=(COMPLETIONS, CHAT),
    card_fields=LMCard,
    log_fields=LMLog,
    serve_section=("lm", DecodingSpec),
)
