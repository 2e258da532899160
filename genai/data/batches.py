"""Per-rank batches of token blocks, as a pure function of the step.

Because the batch for (step, micro-step, rank) is computed, not streamed, a
resumed run continues at exactly the data position where it stopped, and a
run with the same seed sees the same batches.
"""

from __future__ import annotations

import numpy as np
import torch

from genai.specbase import SpecError


def check_items(n_items: int, micro_batch: int, world_size: int) -> None:
    """Every worker needs a micro-batch of distinct items: checked by the driver before
    the worker group starts, and again by each sampler."""
    if n_items < micro_batch * world_size:
        raise SpecError(
            f"only {n_items} training items; need at least "
            f"train.micro_batch_size*scaling.num_workers={micro_batch * world_size}"
        )


class StepSampler:
    """Item indices for (step, micro-step, rank): epochs of a seeded permutation, ranks disjoint."""

    def __init__(
        self, n_items: int, micro_batch: int, grad_accum: int, rank: int, world_size: int, seed: int
    ) -> None:
        check_items(n_items, micro_batch, world_size)
        self.n = n_items
        self.micro_batch, self.grad_accum = micro_batch, grad_accum
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self._perm_epoch, self._perm = -1, np.arange(0)

    @property
    def global_batch(self) -> int:
        """Items per optimizer step across all workers."""
        return self.micro_batch * self.grad_accum * self.world_size

    def _order(self, epoch: int) -> np.ndarray:
        if epoch != self._perm_epoch:
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(self.n)
            self._perm_epoch = epoch
        return self._perm

    def indices(self, step: int, micro: int = 0) -> np.ndarray:
        # global position of this rank's first item in the infinite epoch stream
        start = step * self.global_batch + (micro * self.world_size + self.rank) * self.micro_batch
        idx = np.empty(self.micro_batch, dtype=np.int64)
        for i in range(self.micro_batch):
            pos = start + i
            idx[i] = self._order(pos // self.n)[pos % self.n]
        return idx


class BlockSampler(StepSampler):
    """Non-overlapping ``seq_len`` blocks of a token stream, shuffled per epoch."""

    def __init__(
        self,
        tokens: np.ndarray,
        seq_len: int,
        micro_batch: int,
        grad_accum: int,
        rank: int,
        world_size: int,
        seed: int,
    ) -> None:
        n_blocks = len(tokens) // seq_len
        # (n_blocks, seq_len) view: no copy of the (possibly shared, read-only) token array
        self.blocks = tokens[: n_blocks * seq_len].reshape(n_blocks, seq_len)
        super().__init__(n_blocks, micro_batch, grad_accum, rank, world_size, seed)

    def batch(self, step: int, micro: int) -> torch.Tensor:
        """Token ids (micro_batch, seq_len) for this rank at optimizer step ``step``."""
        return torch.from_numpy(self.blocks[self.indices(step, micro)].astype(np.int64))


def rank_share(n_items: int, limit: int, rank: int, world_size: int) -> np.ndarray:
    """Indices of this rank's fixed evaluation items; every rank gets the same count
    (under ZeRO-3 each forward is a collective)."""
    per_rank = min(n_items // world_size, limit)
    return np.arange(rank, n_items, world_size)[:per_rank]


def eval_batches(
    tokens: np.ndarray,
    seq_len: int,
    micro_batch: int,
    n_batches: int | None,
    rank: int,
    world_size: int,
) -> list[torch.Tensor]:
    """A fixed, rank-strided slice of validation blocks (the same at every evaluation);
    ``n_batches=None``: every block of the split."""
    n_blocks = len(tokens) // seq_len
    blocks = tokens[: n_blocks * seq_len].reshape(n_blocks, seq_len)
    limit = n_blocks if n_batches is None else n_batches * micro_batch
    mine = blocks[rank_share(n_blocks, limit, rank, world_size)]
    if len(mine) == 0:
        raise ValueError(
            f"validation split has {n_blocks} blocks of data.seq_len={seq_len}; "
            f"raise data.val_fraction or data.max_bytes"
        )
    return [
        torch.from_numpy(mine[i : i + micro_batch].astype(np.int64))
        for i in range(0, len(mine), micro_batch)
    ]
