"""Driver side of the LM family: tokenize (or reuse) the corpus, hand it to the workers."""

from __future__ import annotations

from typing import Any

import ray

from genai.data.tokens import prepare as prepare_tokens
from genai.data.tokens import token_byte_lengths


def prepare(spec: Any, log=print) -> dict[str, Any]:
    """Data for the workers, through the object store (workers on other nodes read it too)."""
    data = prepare_tokens(spec.data, log=log)
    if spec.data.streaming:
        # the workers read the shards themselves (genai/data/stream.py): only names travel
        shards = data.train_shards()
        log(f"data: streaming {len(shards)} token shard(s) from {data.dir / 'train'}")
        train: dict[str, Any] = {"train_shards": [(str(p), n) for p, n in shards]}
    else:
        tokens = data.load("train")
        # items are seq_len blocks (BlockSampler): the driver checks the batch against them
        train = {"train_ref": ray.put(tokens), "n_train_items": len(tokens) // spec.data.seq_len}
    return {
        **train,
        "val_ref": ray.put(data.load("val")),
        "tokenizer_files": {p.name: p.read_bytes() for p in data.tokenizer_dir.iterdir()},
        "vocab_size": data.vocab_size,
        "eos_id": data.eos_id,
        "token_bytes": token_byte_lengths(data.tokenizer()),
        "xz_bpb": data.xz_bpb,
    }
