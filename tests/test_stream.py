"""data.streaming: each worker streams its share of the Parquet token shards with Ray Data,
as a pure function of the step: ranks disjoint within an epoch, and a reader opened at any
step (a resume) yields exactly what the uninterrupted reader did."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from genai.data.stream import StreamSampler
from genai.specbase import SpecError

SIZES = [400, 400, 400, 400, 200]
KW = {"seq_len": 10, "micro_batch": 4, "grad_accum": 2, "world_size": 2, "seed": 3}


@pytest.fixture
def shards(tmp_path):
    out, start = [], 0
    for i, n in enumerate(SIZES):  # token values are their global position: easy to trace
        path = tmp_path / f"part-{i:05d}.parquet"
        pq.write_table(pa.table({"tokens": np.arange(start, start + n, dtype=np.int32)}), path)
        out.append((path, n))
        start += n
    return out


def _run(sampler: StreamSampler, steps: range) -> dict[int, np.ndarray]:
    return {
        s: np.stack([sampler.batch(s, m).numpy() for m in range(KW["grad_accum"])]) for s in steps
    }


@pytest.mark.full  # out of make test's 10 minutes: see tests/test_tiers.py
def test_streamed_batches_are_exact_on_resume_and_disjoint_across_ranks(ray_session, shards):
    samplers = [StreamSampler(shards, rank=r, **KW) for r in range(2)]
    per_epoch = samplers[0].micro_per_epoch // KW["grad_accum"]
    # every rank's share holds >= 2 of the 5 shards; the 2 smallest hold 600 tokens, 15
    # micro-batches of 40 tokens, 7 whole steps
    assert per_epoch == 7
    steps = range(0, per_epoch + 3)  # into the second epoch
    # (each reader is a Ray Data execution of a few seconds: rank 1 reads one epoch only)
    seq = [_run(samplers[0], steps), _run(samplers[1], range(per_epoch))]
    for r in range(2):
        blocks = np.concatenate([b.reshape(-1, 10) for b in seq[r].values()])
        assert (np.diff(blocks, axis=1) == 1).all()  # contiguous blocks of real tokens
    # a resume mid-epoch (mid-shard) reads on exactly as the uninterrupted reader did,
    # into the next epoch too
    fresh = StreamSampler(shards, rank=0, **KW)
    resumed = _run(fresh, range(3, steps.stop))
    assert all((resumed[s] == seq[0][s]).all() for s in resumed)
    fresh.close()
    # within an epoch the two ranks never see the same token
    first_epoch = [
        set(np.concatenate([seq[r][s].ravel() for s in range(per_epoch)])) for r in range(2)
    ]
    assert not first_epoch[0] & first_epoch[1]
    # the next epoch is another order
    assert not (seq[0][per_epoch] == seq[0][0]).all()
    for sampler in samplers:
        sampler.close()


def test_too_few_shards_for_the_workers_names_the_field(shards):
    with pytest.raises(SpecError, match="data.streaming"):
        StreamSampler(shards[:1], rank=0, **KW)
