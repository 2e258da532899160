"""Streaming reader throughput and memory: genai's ``StreamSampler`` (Ray Data, what a
worker with ``data.streaming: true`` reads through) vs plain pyarrow reading the same
Parquet token files in the same process, side by side.

    python bench/stream_read.py                  # 12 files x 16M tokens (768 MB), ~1 min
    python bench/stream_read.py --files 24 --repeats 3

Reports tokens/s of each (median over repeats), their ratio, the reader's time to its
first micro-batch (a Ray Data execution starting), and the process's anonymous memory
(RssAnon) at its peak while reading, against what it was before: the memory the reader
adds must not grow with the corpus (run with --files 12 and 24 to see).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SEQ, MICRO = 1024, 256  # 262,144 tokens per micro-batch


def anon_mb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) >> 10
    return -1


def corpus(directory: Path, files: int, tokens: int) -> list[tuple[str, int]]:
    out = []
    for i in range(files):
        path = directory / f"part-{i:05d}.parquet"
        ids = np.random.default_rng(i).integers(0, 50_000, tokens, dtype=np.int32)
        pq.write_table(pa.table({"tokens": ids}), path, use_dictionary=False, compression="none")
        out.append((str(path), tokens))
    return out


def genai_reader(shards: list[tuple[str, int]]) -> dict:
    from genai.data.stream import StreamSampler

    sampler = StreamSampler(shards, SEQ, MICRO, 1, 0, 1, 0)
    t0, n, first, peak = time.perf_counter(), 0, 0.0, 0
    for i in range(sampler.micro_per_epoch):
        n += sampler.batch(i, 0).numel()
        if i == 0:
            first = time.perf_counter() - t0
        peak = max(peak, anon_mb())
    sampler.close()
    return {"tokens": n, "seconds": time.perf_counter() - t0, "first_s": first, "peak": peak}


def pyarrow_reader(shards: list[tuple[str, int]]) -> dict:
    t0, n, peak = time.perf_counter(), 0, 0
    for path, _ in shards:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=SEQ * MICRO, columns=["tokens"]):
            ids = batch.column(0).to_numpy().astype(np.int64)  # as the sampler hands torch
            n += len(ids)
            peak = max(peak, anon_mb())
    return {"tokens": n, "seconds": time.perf_counter() - t0, "first_s": 0.0, "peak": peak}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--files", type=int, default=12)
    p.add_argument("--tokens-per-file", type=int, default=16_000_000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default="runs/bench/stream_read.json")
    args = p.parse_args()
    from genai.hardware import machine_line

    print(machine_line(), flush=True)

    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    with tempfile.TemporaryDirectory(prefix="genai-stream-bench-") as tmp:
        shards = corpus(Path(tmp), args.files, args.tokens_per_file)
        mb = sum(Path(s).stat().st_size for s, _ in shards) >> 20
        print(f"corpus: {args.files} files, {mb} MB; reading it {args.repeats} times each")
        before = anon_mb()
        runs: dict[str, list[dict]] = {"genai": [], "pyarrow": []}
        for r in range(args.repeats):
            for name, fn in (("genai", genai_reader), ("pyarrow", pyarrow_reader)):
                res = fn(shards)
                runs[name].append(res)
                print(
                    f"  {r + 1}/{args.repeats} {name:8s} {res['tokens'] / res['seconds'] / 1e6:7.1f}"
                    f" Mtok/s, first batch {res['first_s']:.1f}s, RssAnon peak {res['peak']} MB"
                )
    ray.shutdown()

    def med(name: str, key: str) -> float:
        return statistics.median(x[key] for x in runs[name])

    rate = {n: statistics.median(x["tokens"] / x["seconds"] for x in runs[n]) for n in runs}
    report = {
        "files": args.files,
        "corpus_mb": mb,
        "genai_mtok_s": round(rate["genai"] / 1e6, 1),
        "pyarrow_mtok_s": round(rate["pyarrow"] / 1e6, 1),
        "ratio": round(rate["genai"] / rate["pyarrow"], 3),
        "genai_first_batch_s": round(med("genai", "first_s"), 1),
        "rss_anon_before_mb": before,
        "genai_rss_anon_peak_mb": med("genai", "peak"),
        "pyarrow_rss_anon_peak_mb": med("pyarrow", "peak"),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
