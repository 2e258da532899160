"""The generation log: what was asked and generated, for quality review and data work.

Each request handled by a route appends a record (:func:`generations_schema`); ``POST
/v1/feedback`` appends a score (:data:`FEEDBACK`). Records go onto a queue and a writer
thread appends them, in batches every ``flush_s``, as row groups of a Parquet file
``<dir>/generations-<time>-<replica>.parquet.inprogress``. The file is closed, fsynced
and renamed to ``.parquet`` every ``rotate_s`` or ``rotate_mb``, and when the replica
stops: a file is complete exactly when its name ends in ``.parquet``. A kill loses the
open file's records (at most ``rotate_s`` of them); a torn or foreign file is skipped
by :func:`read`, never fatal.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
import types
import typing
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel

log = logging.getLogger("ray.serve")

_TIME = pa.timestamp("ms", tz="UTC")
# every request's columns; each family's (Family.log_fields) follow them
_COMMON = [
    ("id", pa.string()),
    ("time", _TIME),
    ("key", pa.string()),  # the API key's name, never the key
    ("model", pa.string()),
    ("route", pa.string()),
    ("step", pa.int64()),
    ("spec_hash", pa.string()),
    ("status", pa.int32()),
    ("latency_s", pa.float64()),
    ("params", pa.string()),  # JSON: sampling parameters, n, seed, size ...
    ("prompt", pa.string()),  # null in metadata mode
    ("output", pa.string()),  # completion text; null in metadata mode
    ("error", pa.string()),
    ("replica", pa.string()),
]
_ARROW = {
    str: pa.string(),
    int: pa.int64(),
    float: pa.float64(),
    bool: pa.bool_(),
    list[str]: pa.list_(pa.string()),
    list[int]: pa.list_(pa.int64()),
    list[float]: pa.list_(pa.float64()),
}


def _arrow_type(annotation: Any, where: str) -> pa.DataType:
    """A log field's column type: its annotation without ``| None`` (every column is
    nullable: a record of another family leaves it empty)."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if type(annotation) is types.UnionType or typing.get_origin(annotation) is typing.Union:
        annotation = args[0] if len(args) == 1 else annotation
    if annotation not in _ARROW:
        raise TypeError(f"{where}: a log field is str, int, float, bool or a list of one")
    return _ARROW[annotation]


def generations_schema(log_fields: list[type[BaseModel]]) -> pa.Schema:
    fields = list(_COMMON)
    for model in log_fields:
        for name, info in model.model_fields.items():
            if name not in {f[0] for f in fields}:
                fields.append((name, _arrow_type(info.annotation, f"{model.__name__}.{name}")))
    return pa.schema(fields)


FEEDBACK = pa.schema(
    [
        ("id", pa.string()),
        ("time", _TIME),
        ("score", pa.float64()),
        ("comment", pa.string()),
        ("key", pa.string()),
    ]
)
MAX_QUEUED = 100_000  # beyond this, records are dropped (and counted) rather than piling up


class ParquetLog:
    """Append-only Parquet files written by one background thread."""

    def __init__(
        self,
        directory: str | Path,
        prefix: str,
        schema: pa.Schema,
        flush_s: float = 1.0,
        rotate_s: float = 300.0,
        rotate_bytes: int = 64 << 20,
        tag: str = "",
    ) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.prefix, self.schema, self.tag = prefix, schema, tag or uuid.uuid4().hex[:8]
        self.flush_s, self.rotate_s, self.rotate_bytes = flush_s, rotate_s, rotate_bytes
        self.dropped = 0
        self._queue: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
        self._writer: pq.ParquetWriter | None = None
        self._path: Path | None = None
        self._opened = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"{prefix}-log", daemon=True)
        self._thread.start()

    def add(self, row: dict[str, Any]) -> None:
        """Queue a record; never blocks and never raises on the request path."""
        if self._queue.qsize() >= MAX_QUEUED:
            self.dropped += 1
            return
        self._queue.put(row)

    def _loop(self) -> None:
        while not self._stop.wait(self.flush_s):
            self._flush()
        self._flush()
        self._rotate()

    def _flush(self) -> None:
        rows = []
        while True:
            try:
                rows.append(self._queue.get_nowait())
            except queue.Empty:
                break
        try:
            if rows:
                if self._writer is None:
                    self._open()
                self._writer.write_table(pa.Table.from_pylist(rows, schema=self.schema))
            if self._writer is not None and (
                time.monotonic() - self._opened >= self.rotate_s
                or self._path.stat().st_size >= self.rotate_bytes
            ):
                self._rotate()
        except Exception:  # a full disk must not take the replica down: log, drop, go on
            log.exception("genai: generation log %s: dropped %d records", self.dir, len(rows))
            self.dropped += len(rows)

    def _open(self) -> None:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
        self._path = self.dir / f"{self.prefix}-{stamp}-{self.tag}.parquet.inprogress"
        self._writer = pq.ParquetWriter(self._path, self.schema, compression="zstd")
        self._opened = time.monotonic()

    def _rotate(self) -> None:
        if self._writer is None:
            return
        self._writer.close()
        with open(self._path, "rb") as f:
            os.fsync(f.fileno())
        os.replace(self._path, self._path.with_suffix(""))  # drop ".inprogress"
        self._writer = None

    def close(self) -> None:
        """Write what is queued and complete the open file."""
        self._stop.set()
        self._thread.join(timeout=30)


class GenerationLog:
    """The generation and feedback logs of one replica, per its ``generation_log`` spec."""

    def __init__(self, spec: Any, replica: str, schema: pa.Schema | None = None) -> None:
        if schema is None:
            from genai.serve.routes import log_fields

            schema = generations_schema(log_fields())
        self.schema = schema
        self.mode: str = spec.mode
        self.save_images: bool = spec.save_images and spec.mode == "full"
        self.replica = replica
        kw = dict(
            flush_s=spec.flush_s,
            rotate_s=spec.rotate_s,
            rotate_bytes=int(spec.rotate_mb * (1 << 20)),
            tag=replica.replace("/", "_")[-24:],
        )
        self.dir = Path(spec.dir)
        self.generations = ParquetLog(self.dir, "generations", schema, **kw)
        self.feedback = ParquetLog(self.dir, "feedback", FEEDBACK, **kw)

    def record(self, rec: dict[str, Any]) -> None:
        """One request's record: the common fields and its family's log fields, by name;
        ``attachments`` (relative path -> bytes, e.g. generated PNGs) are written beside
        the log when ``save_images`` is on."""
        row = {name: rec.get(name) for name in self.schema.names}
        row["time"] = datetime.fromtimestamp(rec["time"], timezone.utc)
        row["replica"] = self.replica
        row["params"] = json.dumps(rec.get("params") or {}, sort_keys=True)
        if self.mode == "metadata":
            row["prompt"] = row["output"] = None
        self.generations.add(row)
        if self.save_images:
            for rel, blob in (rec.get("attachments") or {}).items():
                path = self.dir / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(blob)

    def score(self, id_: str, score: float, comment: str | None, key: str) -> None:
        now = datetime.now(timezone.utc)
        self.feedback.add({"id": id_, "time": now, "score": score, "comment": comment, "key": key})

    def close(self) -> None:
        self.generations.close()
        self.feedback.close()


# ---------------------------------------------------------------------------- reading


def _read_all(directory: Path, prefix: str, schema: pa.Schema) -> tuple[pa.Table, list[Path]]:
    tables, skipped = [], []
    for path in sorted(directory.glob(f"{prefix}-*.parquet")):
        try:
            tables.append(pq.read_table(path, schema=schema))
        except (pa.ArrowException, OSError):
            skipped.append(path)  # torn (killed mid-write and renamed by hand) or foreign
    skipped += sorted(directory.glob(f"{prefix}-*.parquet.inprogress"))  # still being written
    return (pa.concat_tables(tables) if tables else schema.empty_table()), skipped


def read(
    directory: str | Path,
    model: str | None = None,
    since: datetime | None = None,
    min_score: float | None = None,
    max_score: float | None = None,
) -> tuple[pa.Table, list[Path]]:
    """Generations, newest last, with each one's latest feedback (``score``, ``comment``);
    also the files that were skipped (torn, or still open)."""
    import pyarrow.compute as pc

    directory = Path(directory)
    from genai.serve.routes import log_fields

    gens, skipped = _read_all(directory, "generations", generations_schema(log_fields()))
    fb, skipped_fb = _read_all(directory, "feedback", FEEDBACK)
    if model is not None:
        gens = gens.filter(pc.equal(gens["model"], model))
    if since is not None:
        gens = gens.filter(pc.greater_equal(gens["time"], pa.scalar(since, _TIME)))
    latest: dict[str, tuple[float, str | None]] = {}
    for row in fb.sort_by("time").to_pylist():
        latest[row["id"]] = (row["score"], row["comment"])
    ids = gens["id"].to_pylist()
    gens = gens.append_column(
        "score", pa.array([latest.get(i, (None, None))[0] for i in ids], pa.float64())
    )
    gens = gens.append_column(
        "comment", pa.array([latest.get(i, (None, None))[1] for i in ids], pa.string())
    )
    if min_score is not None:
        gens = gens.filter(pc.greater_equal(gens["score"], min_score))
    if max_score is not None:
        gens = gens.filter(pc.less_equal(gens["score"], max_score))
    return gens.sort_by("time"), skipped + skipped_fb
