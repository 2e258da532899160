"""The generation log: what was asked and generated, for quality review and data work.

Each request handled by a route appends a record (:func:`generations_schema`); ``POST
/v1/feedback`` appends a score (:data:`FEEDBACK`). Records go onto a queue and a writer
thread appends them every ``flush_s`` to the open file, an Arrow IPC stream
``<dir>/generations-<time>-<replica>.arrows``, written through to disk (fsync) each time:
readers (``genai generations``, ``GET /v1/generations``) see it up to its last flush, and a
killed replica loses at most the records of its last ``flush_s``. Every ``rotate_s`` or
``rotate_mb``, and when the replica stops, the stream is rewritten as Parquet
(``.parquet``, renamed into place once fsynced); a stream file left by a killed replica
is converted by the next replica that starts on the directory.

With ``encryption`` set, Parquet files use modular encryption and the open stream is
written in AES-GCM frames (genai/serve/logcrypt.py); with ``anonymize``, e-mail
addresses, phone numbers and the like are stored as salted hashes
(genai/serve/anonymize.py). A file that cannot be read (no key, torn, foreign) is
reported by :func:`read`, never fatal.
"""

from __future__ import annotations

import io
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

from genai.serve.anonymize import Anonymizer, salt_for
from genai.serve.logcrypt import (
    MAGIC,
    Cipher,
    LogKeyError,
    is_encrypted_parquet,
    load_key,
    plaintext,
)

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
OPEN_SUFFIX = ".arrows"  # the open file: an Arrow IPC stream
MAX_QUEUED = 100_000  # beyond this, records are dropped (and counted) rather than piling up


class RecordLog:
    """Append-only log files written by one background thread: an open Arrow IPC stream,
    durable after every flush, rotated into Parquet."""

    def __init__(
        self,
        directory: str | Path,
        prefix: str,
        schema: pa.Schema,
        flush_s: float = 1.0,
        rotate_s: float = 300.0,
        rotate_bytes: int = 64 << 20,
        tag: str = "",
        cipher: Cipher | None = None,
    ) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.prefix, self.schema, self.tag = prefix, schema, tag or uuid.uuid4().hex[:8]
        self.flush_s, self.rotate_s, self.rotate_bytes = flush_s, rotate_s, rotate_bytes
        self.cipher = cipher
        self.dropped = 0
        self._queue: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
        self._file: Any = None
        self._ipc: pa.ipc.RecordBatchStreamWriter | None = None
        self._buffer = io.BytesIO()
        self._path: Path | None = None
        self._opened = 0.0
        self._stop = threading.Event()
        compact_orphans(self.dir, prefix, schema, cipher, older_than_s=rotate_s + 60)
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
                if self._ipc is None:
                    self._open()
                assert self._ipc is not None
                self._ipc.write_table(pa.Table.from_pylist(rows, schema=self.schema))
                self._sync()
            if self._ipc is not None and (
                time.monotonic() - self._opened >= self.rotate_s
                or self._file.tell() >= self.rotate_bytes
            ):
                self._rotate()
        except Exception:  # a full disk must not take the replica down: log, drop, go on
            log.exception("genai: generation log %s: dropped %d records", self.dir, len(rows))
            self.dropped += len(rows)

    def _open(self) -> None:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
        self._path = self.dir / f"{self.prefix}-{stamp}-{self.tag}{OPEN_SUFFIX}"
        self._file = open(self._path, "wb")  # noqa: SIM115 (held open across flushes)
        if self.cipher is not None:
            self._file.write(MAGIC)
        self._buffer = io.BytesIO()
        self._ipc = pa.ipc.new_stream(self._buffer, self.schema)
        self._opened = time.monotonic()

    def _sync(self) -> None:
        """The stream's bytes since the last flush to disk (a frame when encrypted): a
        kill after this loses none of them."""
        data = self._buffer.getvalue()
        self._buffer.seek(0)
        self._buffer.truncate()
        if data:
            self._file.write(self.cipher.frame(data) if self.cipher is not None else data)
            self._file.flush()
            os.fsync(self._file.fileno())

    def _rotate(self) -> None:
        if self._ipc is None:
            return
        self._ipc.close()  # the end-of-stream marker
        self._sync()
        self._file.close()
        self._ipc = None
        assert self._path is not None
        to_parquet(self._path, self.schema, self.cipher)

    def close(self) -> None:
        """Write what is queued and complete the open file."""
        self._stop.set()
        self._thread.join(timeout=30)


def to_parquet(path: Path, schema: pa.Schema, cipher: Cipher | None) -> Path:
    """An open (or orphaned) stream file, rewritten as Parquet (encrypted like it): written
    beside it, fsynced, renamed, and only then the stream file removed. A reader that
    finds both reads the Parquet file only."""
    table = read_stream(path, schema, cipher)
    done = path.with_name(path.name.removesuffix(OPEN_SUFFIX) + ".parquet")
    tmp = done.with_name(done.name + ".tmp")
    props = cipher.parquet_encryption() if cipher is not None else None
    with pq.ParquetWriter(tmp, schema, compression="zstd", encryption_properties=props) as w:
        w.write_table(table)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, done)
    path.unlink()
    return done


def compact_orphans(
    directory: Path, prefix: str, schema: pa.Schema, cipher: Cipher | None, older_than_s: float
) -> None:
    """Stream files whose writer is gone (untouched for longer than a rotation) become
    Parquet; a live writer rotates its own file well before then."""
    now = time.time()
    for path in directory.glob(f"{prefix}-*{OPEN_SUFFIX}"):
        try:
            if now - path.stat().st_mtime > older_than_s:
                to_parquet(path, schema, cipher)
        except (OSError, pa.ArrowException, LogKeyError):
            pass  # another replica compacted it, or it is not ours to read: readers skip it


def read_stream(path: Path, schema: pa.Schema, cipher: Cipher | None) -> pa.Table:
    """Every complete record batch of a stream file; a batch torn by a kill is left out."""
    data = plaintext(path.read_bytes(), cipher)
    batches = []
    try:
        reader = pa.ipc.open_stream(pa.BufferReader(data))
        for batch in reader:
            batches.append(batch)
    except (pa.ArrowInvalid, pa.ArrowException, OSError):
        pass  # the torn tail: what came before it stands
    if not batches:
        return schema.empty_table()
    return pa.Table.from_batches(batches).cast(schema)


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
        kw: dict[str, Any] = dict(
            flush_s=spec.flush_s,
            rotate_s=spec.rotate_s,
            rotate_bytes=int(spec.rotate_mb * (1 << 20)),
            tag=replica.replace("/", "_")[-24:],
        )
        self.dir = Path(spec.dir)
        encryption = getattr(spec, "encryption", None)
        cipher = (
            Cipher(load_key(encryption.key_file, encryption.key_env), encryption.kms_client)
            if encryption is not None
            else None
        )
        self.anonymize = (
            Anonymizer(salt_for(self.dir, spec.salt_env))
            if getattr(spec, "anonymize", False)
            else None
        )
        self.cipher = cipher
        kw["cipher"] = cipher
        self.generations = RecordLog(self.dir, "generations", schema, **kw)
        self.feedback = RecordLog(self.dir, "feedback", FEEDBACK, **kw)

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
        if self.anonymize is not None:
            for name in ("prompt", "output", "error"):
                row[name] = self.anonymize(row[name])
        self.generations.add(row)
        if self.save_images:
            for rel, blob in (rec.get("attachments") or {}).items():
                path = self.dir / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(blob)

    def score(self, id_: str, score: float, comment: str | None, key: str) -> None:
        now = datetime.now(timezone.utc)
        if self.anonymize is not None:
            comment = self.anonymize(comment)
        self.feedback.add({"id": id_, "time": now, "score": score, "comment": comment, "key": key})

    def close(self) -> None:
        self.generations.close()
        self.feedback.close()


# ---------------------------------------------------------------------------- reading


def _read_all(
    directory: Path, prefix: str, schema: pa.Schema, cipher: Cipher | None
) -> tuple[pa.Table, list[tuple[Path, str]]]:
    """Every record of the completed (Parquet) and open (stream) files; the files that
    could not be read, and why."""
    tables, skipped = [], []
    # the open files first: one rotated after this listing has its Parquet file below
    open_files = sorted(directory.glob(f"{prefix}-*{OPEN_SUFFIX}"))
    done = sorted(directory.glob(f"{prefix}-*.parquet"))
    stems = {p.name.removesuffix(".parquet") for p in done}
    for path in done:
        try:
            tables.append(_read_parquet(path, schema, cipher))
        except LogKeyError as exc:
            skipped.append((path, str(exc)))
        except (pa.ArrowException, OSError):
            skipped.append((path, "torn or foreign"))  # e.g. killed mid-write, renamed by hand
    for path in open_files:
        stem = path.name.removesuffix(OPEN_SUFFIX)
        if stem in stems:
            continue  # rotated a moment ago: its Parquet file holds the same records
        try:
            tables.append(read_stream(path, schema, cipher))
        except LogKeyError as exc:
            skipped.append((path, str(exc)))
        except FileNotFoundError:  # rotated since the listing: read what it became
            tables.append(_read_parquet(path.with_name(stem + ".parquet"), schema, cipher))
    return (pa.concat_tables(tables) if tables else schema.empty_table()), skipped


def _read_parquet(path: Path, schema: pa.Schema, cipher: Cipher | None) -> pa.Table:
    if not is_encrypted_parquet(path):
        return pq.read_table(path, schema=schema)
    if cipher is None:
        raise LogKeyError("encrypted (set the generation log key)")
    return pq.read_table(path, schema=schema, decryption_properties=cipher.parquet_decryption())


def read(
    directory: str | Path,
    model: str | None = None,
    since: datetime | None = None,
    min_score: float | None = None,
    max_score: float | None = None,
    cipher: Cipher | None = None,
) -> tuple[pa.Table, list[tuple[Path, str]]]:
    """Generations, newest last, with each one's latest feedback (``score``, ``comment``):
    the completed files and the open ones (up to their last flush). Also the files that
    could not be read, and why (encrypted without the key, torn, foreign)."""
    import pyarrow.compute as pc

    directory = Path(directory)
    from genai.serve.routes import log_fields

    gens, skipped = _read_all(directory, "generations", generations_schema(log_fields()), cipher)
    fb, skipped_fb = _read_all(directory, "feedback", FEEDBACK, cipher)
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


def recent(
    directory: str | Path,
    limit: int,
    model: str | None = None,
    key: str | None = None,
    cipher: Cipher | None = None,
) -> list[dict[str, Any]]:
    """The newest ``limit`` generations (of ``key``, if given), newest first, as JSON-ready
    rows: what the playground lists."""
    import pyarrow.compute as pc

    table, _ = read(directory, model, cipher=cipher)
    if key is not None:
        table = table.filter(pc.equal(table["key"], key))
    table = table.slice(max(0, table.num_rows - limit))
    shown = ("id", "time", "key", "model", "route", "status", "latency_s", "prompt", "output")
    out = []
    for row in reversed(table.to_pylist()):
        item = {k: row.get(k) for k in (*shown, "score", "comment")}
        item["time"] = row["time"].isoformat()
        out.append(item)
    return out
