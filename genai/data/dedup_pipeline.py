"""The dedup stages (genai/data/dedup.py) run as a Ray Data pipeline, or in this process
when Ray is not running: the same batch functions either way.

Documents are named by (path, record) and read where the stage runs: the driver sends
file names and receives (position, exact hash, band hashes) rows, never the text.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from genai.data.dedup import (
    DedupResult,
    DedupSpec,
    candidate_pairs,
    cluster_documents,
    signatures,
    verify,
)

Reader = Callable[[str], Iterator[str]]  # a file's documents, in record order

_MAX_FILES_PER_TASK = 256  # a task's share of a large corpus (its memory: these files' text)
# Below these, the stage runs in this process: a Ray Data job's fixed cost (seconds) is more
# than the work (about a millisecond a file here)
_LOCAL_FILES = 200
_LOCAL_PAIRS = 2_000


@dataclass(frozen=True)
class Documents:
    """The corpus as the dedup saw it: one entry per document, in corpus order (files in
    the order given, records in file order)."""

    paths: list[str]
    records: list[int]
    sizes: list[int]
    sha256: list[str]
    synthetic: list[bool]

    def __len__(self) -> int:
        return len(self.paths)


@dataclass(frozen=True)
class FileRef:
    path: str
    count: int | None = None  # the first `count` documents (None: all of them)
    synthetic: bool = False


def deduplicate(
    files: Sequence[FileRef],
    read: Reader,
    spec: DedupSpec,
    log: Callable[[str], None] = print,
    ray_data: bool | None = None,
) -> tuple[Documents, DedupResult]:
    """Read and cluster the documents of ``files`` (read by ``read``, where the stage runs);
    one kept per cluster. Only per-document rows (never text) reach this process.
    ``ray_data``: run the stages as Ray Data tasks (None: when Ray is up and the corpus has
    at least 200 files)."""
    t0 = time.perf_counter()
    local = not ray_data if ray_data is not None else len(files) < _LOCAL_FILES
    rows = _map(
        [
            {"file": i, "path": f.path, "count": -1 if f.count is None else f.count}
            for i, f in enumerate(files)
        ],
        functools.partial(_signatures_of_files, read=read, spec=spec),
        local=local,
    )
    order = np.lexsort((rows["record"], rows["file"]))
    file_of = rows["file"][order]
    docs = Documents(
        paths=[files[int(i)].path for i in file_of],
        records=[int(r) for r in rows["record"][order]],
        sizes=[int(x) for x in rows["size"][order]],
        sha256=[str(x) for x in rows["sha256"][order]],
        synthetic=[files[int(i)].synthetic for i in file_of],
    )
    n = len(docs)
    if not spec.enabled:
        return docs, DedupResult(cluster=list(range(n)), kept=[True] * n, report={"enabled": False})
    exact = [str(x) for x in rows["exact"][order]]
    bands = np.asarray(rows["bands"], dtype=np.uint64).reshape(n, -1)[order]
    _, near = candidate_pairs(exact, bands)
    checked: dict[str, np.ndarray] = {}
    if near:
        checked = _map(
            [
                {
                    "a": a,
                    "b": b,
                    "path_a": docs.paths[a],
                    "record_a": docs.records[a],
                    "path_b": docs.paths[b],
                    "record_b": docs.records[b],
                }
                for a, b in sorted(near)
            ],
            functools.partial(verify, spec=spec, read=functools.partial(_read_one, read=read)),
            local=local or len(near) < _LOCAL_PAIRS,
        )
    result = cluster_documents(
        docs.paths, docs.records, docs.sizes, docs.synthetic, exact, bands, checked, spec
    )
    result.report["seconds"] = round(time.perf_counter() - t0, 2)
    r = result.report
    log(
        f"dedup: {r['documents']} documents -> {r['clusters']} clusters; "
        f"{r['exact_duplicates']} exact copies, {r['near_accepted']} near pairs "
        f"(of {r['near_candidates']} LSH candidates, Jaccard >= {spec.threshold}); "
        f"{'dropped' if spec.drop else 'marked'} {r['dropped_documents']} documents, "
        f"{r['dropped_bytes'] / 1e3:,.1f} kB, in {r['seconds']}s"
    )
    for ex in r["examples"]:
        log(
            f"dedup:   {ex['a']} ~ {ex['b']}: Jaccard {ex['true_jaccard']:.3f} "
            f"(estimated {ex['estimated_jaccard']:.3f})"
        )
    return docs, result


def _signatures_of_files(batch: dict[str, Any], read: Reader, spec: DedupSpec) -> dict[str, Any]:
    file_ids, records, texts = [], [], []
    for i, path, count in zip(batch["file"], batch["path"], batch["count"], strict=True):
        for record, text in enumerate(read(str(path))):
            if record == count:
                break
            file_ids.append(int(i))
            records.append(record)
            texts.append(text)
    columns = {"file": np.asarray(file_ids, np.int64), "record": np.asarray(records, np.int64)}
    return signatures({**columns, "text": texts}, spec)


def _read_one(path: str, record: int, read: Reader) -> str:
    for i, text in enumerate(read(path)):
        if i == record:
            return text
    raise ValueError(f"{path} has no document {record} (changed while being deduplicated?)")


def _map(
    items: Sequence[dict[str, Any]],
    fn: Callable[[dict[str, Any]], dict[str, Any]],
    local: bool = False,
) -> dict[str, np.ndarray]:
    """``fn`` over ``items`` in batches: Ray Data tasks when Ray is up (a few per CPU, so
    that they are long enough to amortize a task's cost), else, or if ``local``, here."""
    import ray

    if local or not ray.is_initialized():
        columns = {k: np.asarray([it[k] for it in items]) for k in items[0]}
        return fn(columns)
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # one log line per stage instead
    cpus = max(1, int(ray.available_resources().get("CPU", 1)))
    blocks = min(len(items), max(2 * cpus, -(-len(items) // _MAX_FILES_PER_TASK)))
    per_block = -(-len(items) // blocks)
    ds = ray.data.from_items(list(items), override_num_blocks=blocks)
    out = ds.map_batches(fn, batch_size=per_block, batch_format="numpy")
    parts = list(out.iter_batches(batch_size=None, batch_format="numpy"))
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
