"""The continuous batch: :class:`BatchDecoder` steps every active sequence by one token per
forward pass, admitting and retiring sequences between steps."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import torch
from transformers import DynamicCache, PreTrainedModel

from genai.decoding.fastpath import KVCache, lean_forward
from genai.decoding.generation import Generation, Sampling, sample_rows, token_logprobs
from genai.models.transformer import context_length

BASE = "__base__"  # peft's name for "no adapter" in a mixed batch


class BatchDecoder:
    """Continuous batching over one model. ``submit`` is thread-safe; ``step`` is not
    (one thread drives it: :meth:`start` runs it in a daemon thread)."""

    def __init__(
        self,
        model: PreTrainedModel,
        *,
        eos_id: int | None,
        max_batch_size: int = 32,
        max_batch_tokens: int = 8192,
        on_step: Callable[[int, float], None] | None = None,
        lean: bool = True,
        on_idle: Callable[[], None] | None = None,
    ) -> None:
        self.model = model
        self.max_position = context_length(model.config)
        # the forward each step calls: genai's lean GPT-2 pass where it applies (fastpath.py)
        self.forward: Any = (lean_forward(model) if lean else None) or model
        self.device = next(model.parameters()).device
        self.eos_id = eos_id
        self.max_batch_size, self.max_batch_tokens = max_batch_size, max_batch_tokens
        self.on_step = on_step  # (batch size, seconds) after each decode step: metrics
        self.on_idle = on_idle  # when it goes idle, and each idle second: metrics
        # one entry per batch row; None: a free row (its sequence left), reused by the next
        # sequence that fits, so rows come and go without copying the whole cache
        self.rows: list[Generation | None] = []
        self._free_steps = 0  # consecutive steps with free rows and nobody waiting
        self._last = torch.zeros(0, dtype=torch.long)  # (B,) each row's token not yet in cache
        self._cache: DynamicCache | KVCache | None = None
        self._mask = torch.zeros(0, 0, dtype=torch.long)  # (B, L): 1 where the cache holds a token
        self._waiting: deque[Generation] = deque()
        # work for the decoder's thread between two steps (adding or removing an adapter):
        # (function returning True when done, or False to be tried again after a step, event)
        self._ops: deque[tuple[Callable[[], bool], threading.Event, list]] = deque()
        # a peft model when LoRA adapters are loaded: every forward names each row's adapter
        self.peft: Any = None
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.counts = {
            "steps": 0,
            "tokens": 0,
            "finished": 0,
            "cancelled": 0,
            "failed": 0,
            "compactions": 0,  # whole-cache copies to drop free rows and dead columns
        }

    # ------------------------------------------------------------------ public

    def submit(self, gen: Generation) -> Generation:
        with self._lock:
            self._waiting.append(gen)
        self._wake.set()
        return gen

    @property
    def queued(self) -> int:
        return len(self._waiting)

    def stats(self) -> dict[str, int]:
        """Counters since start, and what is active and waiting now (for /healthz)."""
        return {"active": self.active, "queued": len(self._waiting), **self.counts}

    @property
    def active(self) -> int:
        return sum(g is not None for g in self.rows)

    @property
    def busy(self) -> bool:
        return bool(self.active or self._waiting)

    def between_steps(self, op: Callable[[], bool], timeout: float = 600.0) -> None:
        """Run ``op`` in the decoder's thread between two steps (where it may change the
        model), and wait for it; ``op`` returns False to be run again after the next step
        (e.g. until no sequence uses what it removes). Raises what ``op`` raised."""
        if self._thread is None or not self._thread.is_alive():
            # driven by hand (tests), or closed: this thread is the decoder's now
            while not op():
                self.step()
            return
        done, error = threading.Event(), []
        with self._lock:
            self._ops.append((op, done, error))
        self._wake.set()
        if not done.wait(timeout):
            raise TimeoutError("the decoder did not run the operation in time")
        if error:
            raise error[0]

    def uses(self, adapter: str) -> bool:
        """Whether a sequence decoding or waiting uses ``adapter``."""
        with self._lock:
            waiting = list(self._waiting)
        return any(g is not None and g.adapter == adapter for g in [*self.rows, *waiting])

    def _run_ops(self) -> None:
        with self._lock:
            ops = list(self._ops)
            self._ops.clear()
        for op, done, error in ops:
            try:
                finished = op()
            except Exception as exc:
                error.append(exc)
                finished = True
            if finished:
                done.set()
            else:
                with self._lock:
                    self._ops.append((op, done, error))

    def _adapters(self, rows: Sequence[Generation | None]) -> dict[str, list[str]]:
        """The forward's per-row adapter names, when adapters are loaded."""
        if self.peft is None:
            return {}
        return {"adapter_names": [(g.adapter if g else None) or BASE for g in rows]}

    def start(self, name: str = "batch-decoder") -> None:
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def run_until_idle(self) -> None:
        """Drive the decoder in this thread until nothing is active or waiting."""
        while self.busy:
            self.step()

    @torch.inference_mode()
    def step(self) -> None:
        """Retire, admit (prefill), then extend every active sequence by one token."""
        self._retire()
        self._admit()
        self._retire()  # a first token may already finish a sequence (EOS, max_tokens=1)
        if not self.active:
            return
        t0 = time.perf_counter()
        mask = torch.cat([self._mask, torch.ones(len(self.rows), 1, dtype=torch.long)], dim=1)
        out = self.forward(
            input_ids=self._last[:, None].to(self.device),
            attention_mask=mask.to(self.device),
            # a free row's position is clamped: it counts steps, not a sequence
            position_ids=self._mask.sum(1, keepdim=True)
            .clamp_max(self.max_position - 1)
            .to(self.device),
            cache=self._cache,
            use_cache=True,
            **self._adapters(self.rows),
        )
        self._cache, self._mask = out.cache, mask
        self._last = self._sample(self.rows, out.logits[:, -1])
        self.counts["steps"] += 1
        self.counts["tokens"] += self.active
        if self.on_step is not None:
            self.on_step(self.active, time.perf_counter() - t0)
        logprobs = self._logprobs(self.rows, out.logits[:, -1], self._last)
        for gen, token, lp in zip(self.rows, self._last.tolist(), logprobs, strict=True):
            if gen is not None:
                gen._push(token, self.eos_id, lp)

    # ------------------------------------------------------------------ internals

    def _loop(self) -> None:
        while not self._closed:
            if self._ops:
                self._run_ops()
            if not self.busy:
                if self.on_idle is not None:
                    self.on_idle()
                self._wake.wait(timeout=1.0)
                self._wake.clear()
                continue
            try:
                self.step()
            except Exception as exc:  # a broken batch fails its requests, not the replica
                for gen in [*self.rows, *self._drain_waiting()]:
                    if gen is not None:
                        gen._fail(exc)
                        self.counts["failed"] += 1
                self._reset()

    def _drain_waiting(self) -> list[Generation]:
        with self._lock:
            out = list(self._waiting)
            self._waiting.clear()
        return out

    def _reset(self) -> None:
        self.rows, self._cache, self._free_steps = [], None, 0
        self._mask = torch.zeros(0, 0, dtype=torch.long)
        self._last = torch.zeros(0, dtype=torch.long)

    def _retire(self) -> None:
        """Free the rows of finished and cancelled sequences; compact the cache only when
        free rows are many or linger (a new sequence usually takes a free row first)."""
        retired = 0
        for i, g in enumerate(self.rows):
            if g is not None and (g.finished or g.cancelled):
                self.counts["finished" if g.finished else "cancelled"] += 1
                self.rows[i] = None
                self._mask[i] = 0  # from now on the row sees only its own latest token
                retired += 1
        live = self.active
        if not live:
            self._reset()
            return
        free = len(self.rows) - live
        if not retired and not free:  # the common step: nothing changed, nothing to check
            return
        self._free_steps = self._free_steps + 1 if free and not self._waiting else 0
        # leading columns no live row uses: attention over them is wasted work
        first = int((self._mask[self._live_index()].sum(0) > 0).nonzero()[0])
        if free > live or self._free_steps > self.COMPACT_AFTER or first >= self.COMPACT_COLUMNS:
            self._compact(first)

    COMPACT_AFTER = 4  # steps a free row may idle (nobody waiting) before the cache shrinks
    COMPACT_COLUMNS = 64  # leading dead columns that trigger a compaction

    def _live_index(self) -> torch.Tensor:
        return torch.tensor([i for i, g in enumerate(self.rows) if g is not None])

    def _compact(self, first: int) -> None:
        index = self._live_index()
        self.rows = [g for g in self.rows if g is not None]
        self._mask, self._last = self._mask[index, first:], self._last[index]
        self._free_steps = 0
        self.counts["compactions"] += 1
        dev_index = index.to(self.device)
        for layer in self._cache.layers:
            layer.keys = layer.keys[dev_index, :, first:]
            layer.values = layer.values[dev_index, :, first:]

    def _admit(self) -> None:
        new: list[Generation] = []
        with self._lock:
            used = sum(g.need for g in self.rows if g is not None)
            while self._waiting and self.active + len(new) < self.max_batch_size:
                gen = self._waiting[0]
                if gen.cancelled:
                    self._waiting.popleft()
                    self.counts["cancelled"] += 1
                    continue
                # a request larger than the whole budget still runs, alone
                if (self.active or new) and used + gen.need > self.max_batch_tokens:
                    break
                used += gen.need
                new.append(self._waiting.popleft())
        if new:
            self._prefill(new)

    def _prefill(self, new: list[Generation]) -> None:
        """Run the new prompts together (left-padded), sample each one's first token,
        and join their caches to the batch's."""
        width = max(len(g.prompt_ids) for g in new)
        ids = torch.zeros(len(new), width, dtype=torch.long)
        mask = torch.zeros(len(new), width, dtype=torch.long)
        for i, g in enumerate(new):
            ids[i, width - len(g.prompt_ids) :] = torch.tensor(g.prompt_ids)
            mask[i, width - len(g.prompt_ids) :] = 1
        positions = (mask.cumsum(1) - 1).clamp_min(0)
        out = self.forward(
            input_ids=ids.to(self.device),
            attention_mask=mask.to(self.device),
            position_ids=positions.to(self.device),
            use_cache=True,
            logits_to_keep=1,
            **self._adapters(new),
        )
        first = self._sample(new, out.logits[:, -1])
        self._join(new, out.cache, mask, first)
        logprobs = self._logprobs(new, out.logits[:, -1], first)
        for gen, token, lp in zip(new, first.tolist(), logprobs, strict=True):
            if gen.sampling.echo:
                self._score_prompt(gen)
            if gen.sampling.max_tokens == 0:  # scoring only (echo): nothing is generated
                gen._finish("length")
            else:
                gen._push(token, self.eos_id, lp)

    def _logprobs(
        self, rows: Sequence[Generation | None], logits: torch.Tensor, chosen: torch.Tensor
    ) -> list[tuple[float, dict[int, float]] | None]:
        """Each row's chosen token's log-probability (and likeliest alternatives), for the
        rows that asked for them."""
        want = [i for i, g in enumerate(rows) if g is not None and g.sampling.logprobs is not None]
        out: list[tuple[float, dict[int, float]] | None] = [None] * len(rows)
        if want:
            top = max(rows[i].sampling.logprobs or 0 for i in want)  # type: ignore[union-attr]
            index = torch.tensor(want)
            found = token_logprobs(logits.cpu()[index], chosen[index], top)
            for i, lp in zip(want, found, strict=True):
                k = rows[i].sampling.logprobs or 0  # type: ignore[union-attr]
                out[i] = (lp[0], dict(list(lp[1].items())[:k]))
        return out

    def _score_prompt(self, gen: Generation) -> None:
        """``echo``: the prompt's tokens' log-probabilities, from one forward over it (the
        batch's prefill keeps only the last position's logits)."""
        ids = torch.tensor([gen.prompt_ids], device=self.device)
        logits = self.forward(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            position_ids=torch.arange(ids.shape[1], device=self.device)[None],
            use_cache=False,
            **self._adapters([gen]),
        ).logits[0]
        found = token_logprobs(logits[:-1].cpu(), ids[0, 1:].cpu(), gen.sampling.logprobs or 0)
        gen.prompt_logprobs = [(None, {}), *found]

    def _join(
        self,
        new: list[Generation],
        cache: DynamicCache | KVCache,
        mask: torch.Tensor,
        last: torch.Tensor,
    ) -> None:
        if not self.rows:
            self.rows, self._cache, self._mask, self._last = list(new), cache, mask, last
            return
        # a new sequence whose prompt fits the batch's width takes a free row in place:
        # its prompt's keys/values go in the row's last columns, zeros before them
        old_len, new_len = self._mask.shape[1], mask.shape[1]
        free = [i for i, g in enumerate(self.rows) if g is None]
        rest = []
        for j, gen in enumerate(new):
            n = len(gen.prompt_ids)
            if not free or n > old_len:
                rest.append(j)
                continue
            i = free.pop(0)
            for mine, theirs in zip(self._cache.layers, cache.layers, strict=True):
                for ours, prompt in ((mine.keys, theirs.keys), (mine.values, theirs.values)):
                    ours[i, :, : old_len - n] = 0
                    ours[i, :, old_len - n :] = prompt[j, :, new_len - n :]
            self._mask[i] = 0
            self._mask[i, old_len - n :] = 1
            self._last[i] = last[j]
            self.rows[i] = gen
        if not rest:
            return
        # the rest are appended as new rows: the whole cache is copied once
        index = torch.tensor(rest)
        dev_index = index.to(self.device)
        mask, last = mask[index], last[index]
        width = max(old_len, new_len)

        def pad(x: torch.Tensor, length: int, dim: int) -> torch.Tensor:
            if length == width:
                return x
            shape = list(x.shape)
            shape[dim] = width - length
            return torch.cat([x.new_zeros(shape), x], dim=dim)

        for mine, theirs in zip(self._cache.layers, cache.layers, strict=True):
            keys, values = theirs.keys[dev_index], theirs.values[dev_index]
            mine.keys = torch.cat([pad(mine.keys, old_len, 2), pad(keys, new_len, 2)])
            mine.values = torch.cat([pad(mine.values, old_len, 2), pad(values, new_len, 2)])
        self._mask = torch.cat([pad(self._mask, old_len, 1), pad(mask, new_len, 1)])
        self._last = torch.cat([self._last, last])
        self.rows.extend(new[j] for j in rest)

    def _sample(self, rows: list[Generation | None], logits: torch.Tensor) -> torch.Tensor:
        # a free row decodes greedily (its token is thrown away) and draws nothing
        temperature = torch.tensor([g.sampling.temperature if g else 0.0 for g in rows])
        top_p = torch.tensor([g.sampling.top_p if g else 1.0 for g in rows])
        # one draw per row from its own generator, whether or not the row samples:
        # a sequence's random stream does not depend on its neighbours
        u = torch.tensor([float(torch.rand((), generator=g.generator)) if g else 0.0 for g in rows])
        return sample_rows(logits.float().cpu(), temperature, top_p, u)


def generate(
    model: PreTrainedModel,
    prompt_ids: Sequence[int],
    sampling: Sampling,
    *,
    eos_id: int | None = None,
    decode: Callable[[list[int]], str] | None = None,
    lean: bool = True,
) -> Generation:
    """One sequence, decoded alone (the batch path with a batch of one)."""
    decoder = BatchDecoder(model, eos_id=eos_id, max_batch_size=1, lean=lean)
    gen = decoder.submit(Generation(prompt_ids, sampling, decode=decode))
    decoder.run_until_idle()
    return gen
