"""Driver side of the LM family: tokenize (or reuse) the corpus, hand it to the workers."""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import ray

from genai.data.tokens import prepare as prepare_tokens
from genai.data.tokens import token_byte_lengths


def prepare(spec: Any, log=print) -> dict[str, Any]:
    """Data for the workers, through the object store (workers on other nodes read it too)."""
    data_spec = spec.data
    if spec.model.pretrained_path and not data_spec.tokenizer.path:
        # fine-tuning: the pretrained model's own tokenizer, never a new one
        tokenizer = data_spec.tokenizer.model_copy(update={"path": spec.model.pretrained_path})
        data_spec = data_spec.model_copy(update={"tokenizer": tokenizer})
    base = base_record(spec.model.pretrained_path) if spec.model.pretrained_path else None
    if data_spec.format == "chat":
        return {**_prepare_chat(data_spec, log), "base": base}
    data = prepare_tokens(data_spec, log=log)
    if data_spec.streaming:
        # the workers read the shards themselves (genai/data/stream.py): only names travel
        shards = data.train_shards()
        log(f"data: streaming {len(shards)} token shard(s) from {data.dir / 'train'}")
        train: dict[str, Any] = {"train_shards": [(str(p), n) for p, n in shards]}
    else:
        tokens = data.load("train")
        # items are seq_len blocks (BlockSampler): the driver checks the batch against them
        train = {"train_ref": ray.put(tokens), "n_train_items": len(tokens) // data_spec.seq_len}
    return {
        **train,
        "val_ref": ray.put(data.load("val")),
        "tokenizer_files": {p.name: p.read_bytes() for p in data.tokenizer_dir.iterdir()},
        "vocab_size": data.vocab_size,
        "eos_id": data.eos_id,
        "token_bytes": token_byte_lengths(data.tokenizer()),
        "xz_bpb": data.xz_bpb,
        "base": base,
        "dataset": dataset_record(data.dir, data.dataset),
    }


def dataset_record(directory: Path, version: str | None) -> dict[str, Any] | None:
    """The dataset version and its manifest's bytes, for the checkpoint to keep a copy."""
    from genai.data import manifest

    path = directory / manifest.MANIFEST
    if version is None or not path.is_file():
        return None
    return {"version": version, "manifest": path.read_bytes()}


def base_record(path: str) -> dict[str, Any]:
    """How a fine-tuned checkpoint names the model it started from: path, name and the
    sha256 of its weights (an adapter is served only over weights with that hash)."""
    from genai import checkpoint as ckpt

    directory = Path(path)
    name = directory.name
    if (directory / ckpt.META).is_file():
        name = ckpt.read_meta(directory).name
    return {"path": str(directory), "name": name, "sha256": ckpt.weights_sha256(directory)}


def _prepare_chat(spec: Any, log) -> dict[str, Any]:
    """Conversations rendered, masked and packed (genai/families/lm/chat.py); whole
    conversations held out."""
    from transformers import AutoTokenizer

    from genai.data.corpus import resolve_files
    from genai.data.dataset import register, whole_items_manifest
    from genai.data.tokens import hold_out
    from genai.families.lm.chat import pack, read_conversations, render

    t0 = time.perf_counter()
    tokenizer: Any = AutoTokenizer.from_pretrained(spec.tokenizer.path, local_files_only=True)
    files = resolve_files(spec)
    found = [(f, r, c) for f in files for r, c in enumerate(read_conversations(f))]
    # exact copies of a conversation train once (near duplicates are left: dedup's
    # shingles are for running text, not short turns)
    digests = [
        hashlib.sha256(json.dumps(c, sort_keys=True).encode()).hexdigest() for _, _, c in found
    ]
    first: dict[str, int] = {}
    dropped = {}
    for i, d in enumerate(digests):
        j = first.setdefault(d, i)
        if j != i and spec.dedup.enabled:
            dropped[i] = j
    keep = [i for i in range(len(found)) if i not in dropped]
    conversations = [found[i][2] for i in keep]
    if len(conversations) < 2:
        raise ValueError(
            f"data.source {spec.source!r} holds {len(conversations)} conversation(s); the "
            "held-out split is made of whole conversations, so it needs at least two"
        )
    rendered = [render(tokenizer, c) for c in conversations]
    order, val_idx = hold_out([len(ids) for ids, _ in rendered], spec.val_fraction, spec.seed)
    items = [
        (f, r, len(json.dumps(c).encode()), d) for (f, r, c), d in zip(found, digests, strict=True)
    ]
    table = whole_items_manifest(spec, files, items, {keep[i] for i in val_idx}, dropped)
    version = register(table, spec, {"dedup": {"exact_duplicates": len(dropped)}})
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    train = pack(
        [rendered[i] for i in order if int(i) not in val_idx], spec.seq_len, pad, spec.pack
    )
    val = pack([rendered[i] for i in sorted(val_idx)], spec.seq_len, pad, spec.pack)
    trained = int((train["labels"] >= 0).sum())
    log(
        f"data: {len(conversations)} conversations ({len(val_idx)} held out, "
        f"{len(dropped)} exact copies dropped; dataset {version}) -> "
        f"{len(train['input_ids'])} train blocks of {spec.seq_len} tokens, {trained:,} of them "
        f"assistant tokens (trained), in {time.perf_counter() - t0:.1f}s"
    )
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)  # its own files only, not the model's weights beside it
        tokenizer_files = {p.name: p.read_bytes() for p in Path(tmp).iterdir() if p.is_file()}
    return {
        "chat_train_ref": ray.put(train),
        "chat_val_ref": ray.put(val),
        "n_train_items": len(train["input_ids"]),
        "tokenizer_files": tokenizer_files,
        "vocab_size": len(tokenizer),
        "eos_id": tokenizer.eos_token_id,
        "token_bytes": token_byte_lengths(tokenizer),
        "xz_bpb": None,
        "dataset": {"version": version, "manifest": _parquet_bytes(table)},
    }


def _parquet_bytes(table: Any) -> bytes:
    import pyarrow as pa

    from genai.data import manifest

    sink = pa.BufferOutputStream()
    manifest.write(table, sink)
    return sink.getvalue().to_pybytes()
