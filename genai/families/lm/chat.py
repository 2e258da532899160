"""Chat data for supervised fine-tuning (``data.format: chat``).

Each JSONL line holds ``{"messages": [{"role", "content"}, ...]}``. A conversation is
rendered by the tokenizer's own chat template, exactly as serving renders a chat request,
and only the assistant's tokens are trained on (the template's text around them, the
system and user turns are context). Which tokens are the assistant's is found from the
template itself: the rendering of the turns before an assistant message with the
generation prompt ends where that message starts, and the rendering up to and including
it ends where it stops (its end-of-turn marker included, so the model learns to stop).

Conversations are packed whole into ``seq_len`` blocks: each token's position restarts at 0
at its conversation's start, and ``transformers`` builds a block-diagonal causal mask from
such positions (no attention from one conversation into another). A conversation longer
than ``seq_len`` is cut to it. Whole conversations are held out for evaluation.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from genai.specbase import SpecError

IGNORE = -100  # the label transformers' loss skips


def read_conversations(path: Path) -> list[list[dict[str, str]]]:
    """The ``messages`` of every line, checked (the error names the line and the field)."""
    out = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{n}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise SpecError(f"{where}: not JSON: {exc}") from None
            messages = record.get("messages") if isinstance(record, dict) else None
            if not isinstance(messages, list) or not messages:
                raise SpecError(f"{where}: messages must be a non-empty list")
            for i, m in enumerate(messages):
                if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant"):
                    raise SpecError(f"{where}: messages[{i}].role must be system/user/assistant")
                if not isinstance(m.get("content"), str):
                    raise SpecError(f"{where}: messages[{i}].content must be a string")
            if not any(m["role"] == "assistant" for m in messages):
                raise SpecError(f"{where}: no assistant message (nothing to train on)")
            out.append([{"role": m["role"], "content": m["content"]} for m in messages])
    return out


def render(tokenizer: Any, messages: list[dict[str, str]]) -> tuple[list[int], list[bool]]:
    """The conversation's token ids as the chat template renders it, and for each token
    whether it is the assistant's (the tokens the loss is taken on)."""
    if tokenizer.chat_template is None:
        raise SpecError("data.format: chat: the tokenizer has no chat template")

    def text(upto: list[dict[str, str]], prompt: bool) -> str:
        return str(
            tokenizer.apply_chat_template(upto, tokenize=False, add_generation_prompt=prompt)
        )

    full = text(messages, False)
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        start, end = text(messages[:i], True), text(messages[: i + 1], False)
        if not (full.startswith(start) and full.startswith(end) and len(start) <= len(end)):
            raise SpecError(
                "data.format: chat: the chat template does not render a conversation's "
                "turns as prefixes of it; the assistant's tokens cannot be found"
            )
        spans.append((len(start), len(end)))
    enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    mask = [e > s and any(a <= s and e <= b for a, b in spans) for s, e in enc["offset_mapping"]]
    return list(enc["input_ids"]), mask


def pack(
    docs: list[tuple[list[int], list[bool]]], seq_len: int, pad_id: int, together: bool = True
) -> dict[str, np.ndarray]:
    """Blocks of ``seq_len``: ``input_ids``, ``labels`` (token id where trained, else
    :data:`IGNORE`) and ``position_ids`` (restarting at each conversation), each
    (n_blocks, seq_len). ``together``: as many whole conversations per block as fit, in
    order; else one per block. Padding is never trained on."""
    blocks: list[list[tuple[list[int], list[bool]]]] = []
    used = seq_len  # forces a first block
    for ids, mask in docs:
        ids, mask = ids[:seq_len], mask[:seq_len]
        if not any(mask):
            continue  # cut before its answer: nothing left to learn from
        if not together or used + len(ids) > seq_len:
            blocks.append([])
            used = 0
        blocks[-1].append((ids, mask))
        used += len(ids)
    out = {
        "input_ids": np.full((len(blocks), seq_len), pad_id, np.int32),
        "labels": np.full((len(blocks), seq_len), IGNORE, np.int32),
        "position_ids": np.zeros((len(blocks), seq_len), np.int32),
    }
    for b, block in enumerate(blocks):
        at = n = 0
        for ids, mask in block:
            n = len(ids)
            out["input_ids"][b, at : at + n] = ids
            out["labels"][b, at : at + n] = np.where(mask, ids, IGNORE)
            out["position_ids"][b, at : at + n] = np.arange(n)
            at += n
        # padding continues the last conversation's positions (no extra segment); it comes
        # after that conversation, so causal attention keeps it out of it, and it is not trained
        out["position_ids"][b, at:] = np.arange(n, n + seq_len - at)
    return out
