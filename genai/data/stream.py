"""Training tokens streamed from Parquet shards by Ray Data (``data.streaming: true``).

Instead of every worker holding the whole token array, each worker reads only its share
of the shards, a few at a time, so a corpus larger than a worker's memory trains through
bounded memory.

Still a pure function of the step, as ``batches.StepSampler`` is, so a resumed run
continues at exactly the data position where it stopped:

- epoch ``e``: the shards in a permutation seeded by ``(seed, e)``; rank ``r`` takes every
  ``world``-th of them, in that order, and cuts their tokens into ``seq_len`` blocks;
- every rank's epoch is as long as the shortest rank's (micro-batches, whole steps), so
  the ranks step together;
- micro-batch ``p = step * grad_accum + micro`` of a rank's stream is found by arithmetic
  over the shards' token counts; the reader seeks there (a resume) or reads on (each step).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from genai.specbase import SpecError


class StreamSampler:
    """Micro-batches ``(micro_batch, seq_len)`` of this rank's share of the token shards."""

    def __init__(
        self,
        shards: list[tuple[str | Path, int]],
        seq_len: int,
        micro_batch: int,
        grad_accum: int,
        rank: int,
        world_size: int,
        seed: int,
    ) -> None:
        if len(shards) < world_size:
            raise SpecError(
                f"data.streaming: the corpus has {len(shards)} token shard(s) for "
                f"{world_size} workers; each worker streams whole shards, so use fewer "
                "workers or a bigger corpus (or data.streaming: false)"
            )
        self.shards = [(str(p), int(n)) for p, n in shards]
        self.seq_len, self.micro_batch, self.grad_accum = seq_len, micro_batch, grad_accum
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.global_batch = micro_batch * grad_accum * world_size
        # whole steps per epoch; the same for every epoch (only the order changes)
        self.micro_per_epoch = self._epoch_micros()
        if self.micro_per_epoch == 0:
            raise SpecError(
                "data.streaming: a worker's share of the corpus is less than one step "
                f"(train.micro_batch_size={micro_batch} x grad_accum_steps={grad_accum} blocks "
                f"of {seq_len} tokens); use fewer workers or a bigger corpus"
            )
        self._reader: Iterator[np.ndarray] | None = None
        self._next = -1  # the micro-batch position the open reader yields next
        _quiet_ray_data()

    # -- which tokens -------------------------------------------------------------------
    def _order(self, epoch: int) -> list[int]:
        return list(np.random.default_rng([self.seed, epoch]).permutation(len(self.shards)))

    def _mine(self, epoch: int, rank: int) -> list[tuple[str, int]]:
        return [self.shards[i] for i in self._order(epoch)[rank :: self.world_size]]

    def _epoch_micros(self) -> int:
        """Micro-batches per epoch, the same for every rank and epoch: what the smallest
        possible share holds (every rank gets at least len(shards) // world shards, so at
        least that many of the smallest ones), in whole steps."""
        per_rank = len(self.shards) // self.world_size
        smallest = sorted(n for _, n in self.shards)[:per_rank]
        micros = sum(smallest) // (self.seq_len * self.micro_batch)
        return micros - micros % self.grad_accum

    # -- reading ------------------------------------------------------------------------
    def batch(self, step: int, micro: int) -> torch.Tensor:
        """Token ids (micro_batch, seq_len) for this rank at optimizer step ``step``."""
        pos = step * self.grad_accum + micro
        if pos != self._next or self._reader is None:
            self.close()
            self._reader = self._open(pos)
        self._next = pos + 1
        return torch.from_numpy(next(self._reader).astype(np.int64))

    def close(self) -> None:
        """End the open reader (its Ray Data execution)."""
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def _open(self, pos: int) -> Iterator[np.ndarray]:
        """A reader yielding micro-batches from position ``pos`` on, across epochs."""
        epoch, k = divmod(pos, self.micro_per_epoch)
        return self._read(epoch, k)

    def _read(self, epoch: int, k: int) -> Iterator[np.ndarray]:
        per_micro = self.seq_len * self.micro_batch
        while True:
            mine = self._mine(epoch, self.rank)
            # skip whole shards before micro-batch k, then tokens within the first one read
            skip = k * per_micro
            first = 0
            while first < len(mine) and mine[first][1] <= skip:
                skip -= mine[first][1]
                first += 1
            left = self.micro_per_epoch - k
            # A block is yielded from in place (views); only a micro-batch that straddles
            # two blocks is copied: concatenating whole blocks made memory creep
            carry = np.zeros(0, np.int32)  # the start of a straddling micro-batch
            for tokens in _ray_data_tokens([p for p, _ in mine[first:]]):
                if skip:
                    cut = min(skip, len(tokens))
                    tokens, skip = tokens[cut:], skip - cut
                if len(carry):
                    need = per_micro - len(carry)
                    carry, tokens = np.concatenate([carry, tokens[:need]]), tokens[need:]
                    if len(carry) < per_micro:
                        continue
                    yield carry.reshape(self.micro_batch, self.seq_len)
                    carry, left = carry[:0], left - 1
                whole = min(len(tokens) // per_micro, left)
                for i in range(whole):
                    yield tokens[i * per_micro : (i + 1) * per_micro].reshape(
                        self.micro_batch, self.seq_len
                    )
                left -= whole
                if left == 0:
                    break
                carry = tokens[whole * per_micro :].copy()  # lets the block go
            epoch, k = epoch + 1, 0


_BLOCK_BYTES = 8 << 20
_INFLIGHT_BYTES = 64 << 20


def _ray_data_tokens(paths: list[str]) -> Iterator[np.ndarray]:
    """The ``tokens`` column of these Parquet files, in order, streamed by Ray Data."""
    if not paths:
        return
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True  # the data position must be exact
    # Bounded memory: at most a few blocks in flight (Ray Data's default budget is a share
    # of the whole cluster's object store), read on this worker's node where possible
    ctx.execution_options.resource_limits = ray.data.ExecutionResources(
        object_store_memory=_INFLIGHT_BYTES
    )
    ctx.execution_options.locality_with_output = True
    # a big file is read as several small blocks, not one (Ray Data's default: up to 128 MB)
    ctx.target_max_block_size = _BLOCK_BYTES
    ds = ray.data.read_parquet(
        paths,
        # reads are I/O: they must not wait for CPUs that the training workers hold
        num_cpus=0,
        # ...and so nothing bounds how many run at once but this: each is a worker process
        # (~80 MB) holding a shard; two keep the next shard coming while one is consumed
        concurrency=2,
        override_num_blocks=len(paths),
        shuffle=None,
    ).select_columns(["tokens"])
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=1):
        yield np.asarray(batch["tokens"], dtype=np.int32)


def _quiet_ray_data() -> None:
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
