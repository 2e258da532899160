"""Read a text corpus from local files: text/code files, JSONL or Parquet.

``source: stdlib`` reads the Python standard library's own ``.py`` files, a
code corpus that exists offline on every machine with Python.
"""

from __future__ import annotations

import glob
import json
import os
import sysconfig
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from genai.config import SpecError
from genai.families.lm import DataSpec

_FORMATS = {".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"}


def resolve_files(spec: DataSpec) -> list[Path]:
    """The corpus files, in a stable order (the cache key depends on it)."""
    if spec.source == "stdlib":
        root = Path(sysconfig.get_paths()["stdlib"])
        # test suites, vendored packages and generated tables (codec maps, pydoc topics)
        # are noisy; the rest is idiomatic code
        files = [
            p
            for pattern in spec.include
            for p in root.rglob(pattern)
            if not (
                {"test", "tests", "idlelib", "site-packages", "lib2to3", "encodings", "pydoc_data"}
                & set(p.relative_to(root).parts)
            )
        ]
    else:
        src = Path(os.path.expanduser(spec.source))
        if src.is_file():
            files = [src]
        elif src.is_dir():
            include = spec.include
            if spec.format in ("tokens", "chat") and "include" not in spec.model_fields_set:
                # the default include is for source code
                include = ["*.parquet"] if spec.format == "tokens" else ["*.jsonl"]
            files = [p for pattern in include for p in src.rglob(pattern) if p.is_file()]
        else:
            files = [Path(p) for p in glob.glob(os.path.expanduser(spec.source), recursive=True)]
            files = [p for p in files if p.is_file()]
    files = sorted(set(files))
    if not files:
        raise SpecError(
            f"data.source {spec.source!r} matched no files (data.include={spec.include})"
        )
    return files


def file_format(path: Path, spec: DataSpec) -> str:
    return spec.format if spec.format != "auto" else _FORMATS.get(path.suffix.lower(), "text")


def iter_documents(files: list[Path], spec: DataSpec) -> Iterator[str]:
    """Yield documents until ``data.max_bytes`` of text has been read."""
    for _, _, doc in iter_records(files, spec):
        yield doc


def iter_records(files: list[Path], spec: DataSpec) -> Iterator[tuple[Path, int, str]]:
    """(file, record, text) for each document until ``data.max_bytes`` of text has been
    read; ``record`` counts a file's non-empty documents (0 for a text file), so
    ``read_documents(file, spec)`` finds the same document at the same position."""
    budget = spec.max_bytes
    for path in files:
        for record, doc in enumerate(read_documents(path, spec)):
            budget -= len(doc.encode("utf-8", "ignore"))
            yield path, record, doc
            if budget <= 0:
                return


def read_documents(path: Path, spec: DataSpec) -> Iterator[str]:
    """A file's non-empty documents, in order."""
    return (doc for doc in _read(path, spec) if doc)


def jsonl_records(path: Path, what: str) -> Iterator[tuple[int, Any]]:
    """(line number, parsed record) for each non-blank line; bad JSON names the line and
    ``what`` was being read."""
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError:
                raise SpecError(f"{path}:{lineno}: not valid JSON ({what})") from None


def _read(path: Path, spec: DataSpec) -> Iterator[str]:
    fmt = file_format(path, spec)
    if fmt == "text":
        yield path.read_text(encoding="utf-8", errors="replace")
    elif fmt == "jsonl":
        for lineno, record in jsonl_records(path, "data.format=jsonl"):
            text = record.get(spec.text_field) if isinstance(record, dict) else None
            if not isinstance(text, str):
                raise SpecError(
                    f"{path}:{lineno}: no string field data.text_field={spec.text_field!r}"
                )
            yield text
    else:
        table = pq.ParquetFile(path)
        if spec.text_field not in table.schema_arrow.names:
            raise SpecError(
                f"{path}: no column data.text_field={spec.text_field!r} (columns: {table.schema_arrow.names})"
            )
        for batch in table.iter_batches(columns=[spec.text_field], batch_size=1024):
            yield from (t for t in batch.column(0).to_pylist() if isinstance(t, str))
