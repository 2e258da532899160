"""Dataset manifests and versions.

A prepared dataset's manifest is a Parquet table with one row per source document: where
it came from (path relative to the corpus root, and record within the file), its size and
sha256, the split it went to, its dedup cluster and whether it was kept, and its origin
(``real``, or ``synthetic`` with the generation and model that produced it).

The **version id** is the sha256 of the manifest's rows (canonical JSON, in corpus
order), not of the Parquet bytes, which carry writer metadata: the same files prepared the
same way give the same id on any machine, and a changed file gives another. Versions are
kept under ``<cache_dir>/datasets/<id>/`` (``manifest.parquet`` + ``dataset.json``), and a
checkpoint carries a copy of its own manifest, so it can say which documents it trained on
and which it held out without anything outside it.
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import datetime, timezone
from hashlib import sha256
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from genai.specbase import SpecError

SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("record", pa.int64()),
        ("size", pa.int64()),
        ("sha256", pa.string()),
        ("split", pa.string()),  # train | val | dropped
        ("cluster", pa.int64()),  # row of the cluster's kept document
        ("kept", pa.bool_()),
        ("duplicate_of", pa.string()),  # the kept document's path[#record], for a dropped one
        ("origin", pa.string()),  # real | synthetic
        ("generation_id", pa.string()),  # synthetic: the logged generation it came from
        ("generation_model", pa.string()),  # synthetic: the model that wrote it
    ]
)
MANIFEST = "manifest.parquet"
SUMMARY = "dataset.json"
ID_LENGTH = 16


def document_name(path: str, record: int) -> str:
    return f"{path}#{record}" if record else path


def build(rows: dict[str, list[Any]]) -> pa.Table:
    """The manifest table from columns (missing optional columns are null)."""
    n = len(rows["path"])
    columns = {f.name: rows.get(f.name, [None] * n) for f in SCHEMA}
    return pa.table(columns, schema=SCHEMA)


def version_id(table: pa.Table) -> str:
    h = sha256()
    for row in table.to_pylist():
        h.update(json.dumps(row, sort_keys=True, separators=(",", ":")).encode())
        h.update(b"\n")
    return h.hexdigest()[:ID_LENGTH]


def write(table: pa.Table, path: Path | pa.NativeFile) -> None:
    pq.write_table(table, path)


def register(table: pa.Table, summary: dict[str, Any], root: Path) -> str:
    """Store a version under ``root`` (``<cache_dir>/datasets``), once; returns its id."""
    version = version_id(table)
    dest = root / version
    if (dest / SUMMARY).is_file():
        return version
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=root))
    write(table, tmp / MANIFEST)
    record = {
        "version": version,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **summary,
        "counts": counts(table),
    }
    (tmp / SUMMARY).write_text(json.dumps(record, indent=2, default=str))
    try:
        os.rename(tmp, dest)
    except OSError:  # another writer registered the same version first: theirs is identical
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return version


def counts(table: pa.Table) -> dict[str, Any]:
    """Documents and bytes per split and per origin."""
    out: dict[str, Any] = {}
    rows = table.select(["split", "origin", "size"]).to_pylist()
    for key in ("split", "origin"):
        groups: dict[str, dict[str, int]] = {}
        for r in rows:
            g = groups.setdefault(r[key], {"documents": 0, "bytes": 0})
            g["documents"] += 1
            g["bytes"] += r["size"]
        out[key] = groups
    return out


def versions(root: Path) -> list[dict[str, Any]]:
    """Every stored version's summary, oldest first."""
    if not root.is_dir():
        return []
    found = [
        json.loads((d / SUMMARY).read_text()) for d in root.iterdir() if (d / SUMMARY).is_file()
    ]
    return sorted(found, key=lambda s: (s.get("created", ""), s["version"]))


def resolve(root: Path, version: str) -> Path:
    """A version's directory from its id or a unique prefix of it."""
    matches = (
        [d for d in root.glob(f"{version}*") if (d / SUMMARY).is_file()] if root.is_dir() else []
    )
    if len(matches) != 1:
        what = "no" if not matches else f"{len(matches)}"
        raise SpecError(f"dataset version {version!r}: {what} stored versions match under {root}")
    return matches[0]


def read(root: Path, version: str) -> tuple[dict[str, Any], pa.Table]:
    d = resolve(root, version)
    return json.loads((d / SUMMARY).read_text()), pq.read_table(d / MANIFEST)


def diff(a: pa.Table, b: pa.Table) -> dict[str, list[dict[str, Any]]]:
    """What changed from ``a`` to ``b``, per document: added, removed, content changed
    (sha256), and moved between splits or in or out of the kept set."""
    ra = {document_name(r["path"], r["record"]): r for r in a.to_pylist()}
    rb = {document_name(r["path"], r["record"]): r for r in b.to_pylist()}
    out: dict[str, list[dict[str, Any]]] = {"added": [], "removed": [], "changed": [], "moved": []}
    for name in sorted(ra.keys() | rb.keys()):
        x, y = ra.get(name), rb.get(name)
        if x is None:
            out["added"].append({"document": name, "split": y["split"], "sha256": y["sha256"]})
        elif y is None:
            out["removed"].append({"document": name, "split": x["split"], "sha256": x["sha256"]})
        else:
            if x["sha256"] != y["sha256"]:
                out["changed"].append(
                    {
                        "document": name,
                        "sha256": [x["sha256"], y["sha256"]],
                        "size": [x["size"], y["size"]],
                    }
                )
            if x["split"] != y["split"]:
                out["moved"].append({"document": name, "split": [x["split"], y["split"]]})
    return out
