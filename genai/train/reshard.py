"""Continuing a run on a different number of workers.

A run's global batch (items per optimizer step) is fixed when it starts; on another
worker count the per-worker split changes instead (``split_batch``), so every step
still sees the same items and the LR schedule still means the same thing.

ZeRO-partitioned optimizer state (and bf16 master weights) are saved per data-parallel
rank, and DeepSpeed refuses to load them on another world size. ``to_universal``
converts such a checkpoint with DeepSpeed's own ``ds_to_universal`` into its universal
(per-parameter) format, which ``Engine.load(..., universal=True)`` partitions afresh.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import shutil
from pathlib import Path

from genai.specbase import SpecError


def split_batch(global_batch: int, world: int, max_micro: int) -> tuple[int, int]:
    """(micro_batch, grad_accum) for ``world`` workers: the fewest accumulation steps whose
    micro-batch is at most ``max_micro`` (the memory the spec planned for)."""
    if global_batch % world:
        raise SpecError(
            f"the run's global batch ({global_batch}) does not split evenly over {world} "
            "workers: choose scaling.num_workers (or min_workers) that divides it"
        )
    per_worker = global_batch // world
    for accum in range(1, per_worker + 1):
        if per_worker % accum == 0 and per_worker // accum <= max_micro:
            return per_worker // accum, accum
    return 1, per_worker  # unreachable: accum = per_worker gives micro 1


def needs_universal(engine_dir: Path, tag: str) -> bool:
    """Whether the saved state is partitioned per rank (ZeRO >= 1, or bf16 at ZeRO-0)."""
    return any((engine_dir / tag).glob("*zero_pp_rank_*optim_states.pt"))


def to_universal(engine_dir: Path, tag: str, out_dir: Path) -> Path:
    """Convert ``engine_dir/tag`` into DeepSpeed's universal format under ``out_dir/tag``;
    returns ``out_dir`` (the ``load_dir`` for ``Engine.load(..., universal=True)``)."""
    from deepspeed.checkpoint.ds_to_universal import main as ds_to_universal

    dest = out_dir / tag
    shutil.rmtree(dest, ignore_errors=True)
    args = argparse.Namespace(
        input_folder=str(engine_dir / tag),
        output_folder=str(dest),
        num_extract_workers=1,  # its process pools add nothing on small states
        num_merge_workers=1,
        keep_temp_folder=False,
        strict=True,
        inject_missing_state=True,
    )
    # it prints a progress line per phase and tqdm bars; the loop says one line instead
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        ds_to_universal(args)
    return out_dir
