"""A music model judged: pieces sampled from it (transformers, on this machine) and the
held-out real pieces of its dataset, side by side by music21 (:mod:`.quality`)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import torch

from genai.checkpoint import DATASET, read_meta, resolve
from genai.families.audio.music.quality import judge
from genai.families.audio.music.serve import HEADER, TEMPERATURE, first_piece


def held_out_pieces(checkpoint: Path) -> list[str]:
    """The pieces the run held out, read from its corpus (manifest paths are relative to
    the job's ``data.source``)."""
    root = Path(read_meta(checkpoint).spec["data"]["source"])
    table = pq.read_table(checkpoint / DATASET, columns=["path", "split"]).to_pylist()
    return [(root / r["path"]).read_text() for r in table if r["split"] == "val"]


@torch.no_grad()
def sample_pieces(
    lm: Any,
    n: int,
    max_tokens: int,
    seed: int,
    temperature: float = TEMPERATURE,
    prompt: str = HEADER,
) -> list[str]:
    """n pieces that ``lm`` (:func:`genai.families.lm.serving.load_lm`) writes after
    ``prompt``."""
    ids = lm.tokenizer(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
    room = min(max_tokens, lm.context - ids.shape[1])
    torch.manual_seed(seed)
    out = []
    for start in range(0, n, 16):
        k = min(16, n - start)
        gen = lm.model.generate(
            ids.repeat(k, 1),
            attention_mask=torch.ones(k, ids.shape[1], dtype=torch.long),
            do_sample=True,
            temperature=temperature,
            top_k=0,
            max_new_tokens=room,
            pad_token_id=lm.tokenizer.eos_token_id,
            eos_token_id=lm.tokenizer.eos_token_id,
        )
        for row in gen:
            text = str(lm.tokenizer.decode(row, skip_special_tokens=True))
            out.append(first_piece(text))
    return out


def header_of(piece: str) -> str:
    """A piece's opening up to its first part's notes: ``X:``, ``M:``, ``L:``, ``K:``,
    ``V:1``."""
    at = piece.find("V:1\n")
    return piece[: at + 4] if at >= 0 else HEADER


def from_headers(
    lm: Any, pieces: list[str], n: int, max_tokens: int, seed: int, temperature: float
) -> list[str]:
    """n pieces, each continued from a held-out piece's header (in turn): the model asked
    for a given meter and key, as a user of the route may ask."""
    wanted = Counter(header_of(pieces[i % len(pieces)]) for i in range(n))
    out = []
    for k, (header, count) in enumerate(sorted(wanted.items())):
        out += sample_pieces(lm, count, max_tokens, seed + k, temperature, header)
    return out


def judge_checkpoint(
    path: str | Path, pieces: int, max_tokens: int, seed: int, temperature: float = TEMPERATURE
) -> dict[str, Any]:
    from genai.families.lm.serving import load_lm

    checkpoint = resolve(path)
    meta = read_meta(checkpoint)
    lm = load_lm(checkpoint)
    held = held_out_pieces(checkpoint)
    real = judge(held)
    generated = judge(sample_pieces(lm, pieces, max_tokens, seed, temperature))
    given = judge(from_headers(lm, held, pieces, max_tokens, seed, temperature))
    return {
        "checkpoint": str(checkpoint),
        "step": meta.step,
        "val_bpb": meta.metrics.get("val_bpb"),
        "xz_bpb": meta.metrics.get("xz_bpb"),
        "bpb_vs_xz": meta.metrics.get("bpb_vs_xz"),
        "temperature": temperature,
        "generated": generated,
        "generated_from_held_out_headers": given,
        "held_out_real": real,
    }
