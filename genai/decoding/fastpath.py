"""A lean forward pass for serving GPT-2-architecture models: the same weights and the same
arithmetic as ``transformers``' GPT-2, with the per-call Python work cut out.

Why it exists: lm-tiny's forward (4 layers, 192 wide) is so small that ``transformers``'
generic machinery (mask builders, cache classes, output dataclasses) costs more than the
arithmetic. Measured on the 2-core CPU machine, one thread: a decode step for one sequence
took 4.1-6.1 ms through ``GPT2LMHeadModel`` and 2.2-3.0 ms here; a 32-sequence decoder ran
45-54 against 32-45 sequences/s. ``make bench-serve`` shows it inside the server (the
``genai hf-forward`` row). Larger models are dominated by their matmuls, where the two
paths cost the same.

Only serving uses it, and only for the plain GPT-2 configuration genai builds
(:func:`lean_forward` returns ``None`` for anything else, and the decoder falls back to
the ``transformers`` model). ``tests/test_units.py`` holds it to ``transformers``' logits.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel


class LayerKV:
    """One layer's keys and values, (B, heads, L, head_dim), in buffers with room to grow:
    a decode step writes its token in place instead of copying the whole cache (the copy
    was the largest cost of a 32-sequence step). Assigning ``keys`` or ``values`` (what the
    decoder does when rows leave or join) replaces that buffer."""

    GROW = 64  # positions of spare room added when a buffer is full

    def __init__(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        # each buffer keeps its own length: the decoder assigns keys, then values
        self._k, self._v = keys, values
        self._kn, self._vn = keys.shape[2], values.shape[2]

    @property
    def keys(self) -> torch.Tensor:
        return self._k[:, :, : self._kn]

    @keys.setter
    def keys(self, value: torch.Tensor) -> None:
        self._k, self._kn = value, value.shape[2]

    @property
    def values(self) -> torch.Tensor:
        return self._v[:, :, : self._vn]

    @values.setter
    def values(self, value: torch.Tensor) -> None:
        self._v, self._vn = value, value.shape[2]

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write the new positions after the old ones; the whole keys and values after."""
        self._k, self._kn = self._write(self._k, self._kn, k)
        self._v, self._vn = self._write(self._v, self._vn, v)
        return self.keys, self.values

    def _write(self, buf: torch.Tensor, n: int, new: torch.Tensor) -> tuple[torch.Tensor, int]:
        end = n + new.shape[2]
        if end > buf.shape[2]:
            grown = new.new_empty((*new.shape[:2], end + self.GROW, new.shape[3]))
            grown[:, :, :n] = buf[:, :, :n]
            buf = grown
        buf[:, :, n:end] = new
        return buf, end


@dataclass
class KVCache:
    """The shape :class:`~genai.decoding.batch.BatchDecoder` edits: ``layers[i].keys/values``,
    as in ``transformers``' ``DynamicCache``."""

    layers: list[LayerKV]


@dataclass(frozen=True)
class _Block:
    ln1: tuple[torch.Tensor, torch.Tensor]
    qkv: tuple[torch.Tensor, torch.Tensor]  # Conv1D: weight (d, 3d), bias (3d,)
    proj: tuple[torch.Tensor, torch.Tensor]
    ln2: tuple[torch.Tensor, torch.Tensor]
    fc: tuple[torch.Tensor, torch.Tensor]
    out: tuple[torch.Tensor, torch.Tensor]


class LeanGPT2:
    """Callable like the model in the decoder: ``(input_ids, attention_mask, position_ids,
    cache=None, use_cache=True, logits_to_keep=0) -> .logits, .cache``."""

    def __init__(self, model: PreTrainedModel) -> None:
        t, cfg = model.transformer, model.config
        self.wte, self.wpe = t.wte.weight, t.wpe.weight
        self.head = model.lm_head.weight
        self.heads, self.d, self.eps = cfg.n_head, cfg.n_embd, cfg.layer_norm_epsilon
        self.ln_f = (t.ln_f.weight, t.ln_f.bias)

        def wb(m: Any) -> tuple[torch.Tensor, torch.Tensor]:
            return m.weight, m.bias

        self.blocks = [
            _Block(
                wb(b.ln_1),
                wb(b.attn.c_attn),
                wb(b.attn.c_proj),
                wb(b.ln_2),
                wb(b.mlp.c_fc),
                wb(b.mlp.c_proj),
            )
            for b in t.h
        ]

    def __call__(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        cache: KVCache | None = None,
        use_cache: bool = True,
        logits_to_keep: int = 0,
    ) -> SimpleNamespace:
        batch, new = input_ids.shape
        past = 0 if cache is None else cache.layers[0].keys.shape[2]
        heads, d = self.heads, self.d
        x = F.embedding(input_ids, self.wte) + F.embedding(position_ids, self.wpe)
        # which keys each query may see: the row's real tokens, causally. A padding query
        # sees every key instead (never none: that would be NaN); nothing reads its output.
        keep = attention_mask.bool()
        allowed = keep[:, None, None, :]
        if new > 1:
            causal = torch.ones(new, past + new, dtype=torch.bool, device=x.device).tril(past)
            allowed = (allowed & causal) | ~keep[:, None, past:, None]
        layers = []
        for i, blk in enumerate(self.blocks):
            h = F.layer_norm(x, (d,), *blk.ln1, self.eps)
            qkv = torch.addmm(blk.qkv[1], h.view(-1, d), blk.qkv[0])
            q, k, v = qkv.view(batch, new, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
            if cache is None:
                layers.append(LayerKV(k.contiguous(), v.contiguous()))
            else:
                k, v = cache.layers[i].append(k, v)
            a = _attention(q, k, v, allowed)
            a = a.transpose(1, 2).reshape(batch * new, d)
            x = x + torch.addmm(blk.proj[1], a, blk.proj[0]).view(batch, new, d)
            h = F.layer_norm(x, (d,), *blk.ln2, self.eps)
            m = F.gelu(torch.addmm(blk.fc[1], h.view(-1, d), blk.fc[0]), approximate="tanh")
            x = x + torch.addmm(blk.out[1], m, blk.out[0]).view(batch, new, d)
        if logits_to_keep:
            x = x[:, -logits_to_keep:]
        x = F.layer_norm(x, (d,), *self.ln_f, self.eps)
        if cache is None:
            cache = KVCache(layers)
        return SimpleNamespace(logits=F.linear(x, self.head), cache=cache if use_cache else None)


def _attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor):
    if q.shape[2] > 1:  # prefill: keys are fresh, contiguous tensors
        return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
    # one query per row, keys in a buffer view: plain matmuls read the view in place,
    # where SDPA's CPU kernel copies it first (2-4x slower here)
    scores = torch.matmul(q, k.transpose(-1, -2)).mul_(q.shape[-1] ** -0.5)
    scores = scores.masked_fill_(~allowed, float("-inf")).softmax(-1)
    return torch.matmul(scores, v)


def lean_forward(model: PreTrainedModel) -> LeanGPT2 | None:
    """The lean forward for a plain GPT-2 (what genai builds), else ``None``."""
    cfg = model.config
    plain_gpt2 = (
        cfg.model_type == "gpt2"
        and type(model).__name__ == "GPT2LMHeadModel"
        and cfg.activation_function in ("gelu_new", "gelu_pytorch_tanh")
        and cfg.scale_attn_weights
        and not cfg.scale_attn_by_inverse_layer_idx
        and not cfg.reorder_and_upcast_attn
        and not cfg.add_cross_attention
        and model.lm_head.bias is None
    )
    return LeanGPT2(model) if plain_gpt2 and not model.training else None
