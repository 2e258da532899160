"""Held-out quality of an LM checkpoint, against xz, and how much of the split an estimate needs.

    python bench/lm_heldout.py runs/lm-tiny-10min/checkpoints/latest

Evaluates the checkpoint (safetensors, no training code) on its spec's held-out split
(whole files): bits per byte on the whole split, on each half, and on the first 4
micro-batches (what ``train.eval_batches: 4`` used to report), beside ``xz -9e`` on the
same text. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math

import torch

from genai.config import JobSpec
from genai.data.batches import eval_batches
from genai.data.tokens import prepare, token_byte_lengths
from genai.families.lm.serving import load_lm


@torch.no_grad()
def bits_per_byte(model, batches, token_bytes) -> float:
    nats = n_bytes = 0.0
    for b in batches:
        loss = float(model(input_ids=b, labels=b).loss)
        nats += loss * b[:, 1:].numel()
        n_bytes += float(token_bytes[b[:, 1:]].sum())
    return nats / math.log(2) / n_bytes


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("checkpoint")
    args = p.parse_args()
    from genai.hardware import machine_line

    print(machine_line(), flush=True)
    lm = load_lm(args.checkpoint)
    spec = JobSpec.model_validate(lm.meta.spec)
    data = prepare(spec.data, log=lambda m: None)
    token_bytes = torch.from_numpy(token_byte_lengths(data.tokenizer()))
    val = data.load("val")
    micro, seq = spec.train.micro_batch_size, spec.data.seq_len
    whole = eval_batches(val, seq, micro, None, 0, 1)
    half = len(whole) // 2
    out = {
        "checkpoint": str(lm.path),
        "step": lm.meta.step,
        "val_tokens": len(val),
        "val_bytes": data.val_bytes,
        "xz_bpb": data.xz_bpb,
        "bpb_whole_split": bits_per_byte(lm.model, whole, token_bytes),
        "bpb_first_half": bits_per_byte(lm.model, whole[:half], token_bytes),
        "bpb_second_half": bits_per_byte(lm.model, whole[half:], token_bytes),
        "bpb_first_4_batches": bits_per_byte(lm.model, whole[:4], token_bytes),
    }
    out["whole_vs_xz"] = out["bpb_whole_split"] / data.xz_bpb
    out["four_batch_error"] = out["bpb_first_4_batches"] / out["bpb_whole_split"] - 1
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
