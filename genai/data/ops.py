"""``genai data``: dataset versions (ls, show, diff) and dedup of a corpus alone."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import ValidationError

from genai.data import manifest
from genai.specbase import SpecError

Print = Callable[[str], None]


def datasets_root(cache_dir: str) -> Path:
    return Path(cache_dir).expanduser().absolute() / "datasets"


def ls(cache_dir: str, out: Print = print) -> None:
    found = manifest.versions(datasets_root(cache_dir))
    if not found:
        out(f"no dataset versions under {datasets_root(cache_dir)} (genai train prepares them)")
        return
    out(
        f"{'version':<18} {'created':<26} {'train':>7} {'val':>5} {'dropped':>8} {'synthetic':>9}  source"
    )
    for s in found:
        split = s["counts"]["split"]
        synthetic = s["counts"]["origin"].get("synthetic", {}).get("documents", 0)
        out(
            f"{s['version']:<18} {s['created']:<26} "
            f"{split.get('train', {}).get('documents', 0):>7} "
            f"{split.get('val', {}).get('documents', 0):>5} "
            f"{split.get('dropped', {}).get('documents', 0):>8} {synthetic:>9}  {s['source']}"
        )


def show(target: str, cache_dir: str, files: bool, out: Print = print) -> None:
    """A version (id or prefix) or a checkpoint directory: its summary, and with ``files``
    every document's row."""
    summary, table = load(target, cache_dir)
    out(json.dumps({k: v for k, v in summary.items() if k != "spec"}, indent=2, default=str))
    if files:
        for r in table.to_pylist():
            extra = f" duplicate of {r['duplicate_of']}" if r["duplicate_of"] else ""
            origin = f" [{r['origin']} {r['generation_id'] or ''}]" if r["origin"] != "real" else ""
            out(
                f"{r['split']:<8} {r['size']:>9} {r['sha256'][:12]}  "
                f"{manifest.document_name(r['path'], r['record'])}{extra}{origin}"
            )


def load(target: str, cache_dir: str) -> tuple[dict[str, Any], pa.Table]:
    """A stored version, or the manifest a checkpoint carries."""
    path = Path(target).expanduser()
    if path.is_dir() and (path / "meta.json").is_file():
        from genai import checkpoint as ckpt

        meta = ckpt.read_meta(path)
        record = meta.export.get("dataset")
        if not record or not (path / ckpt.DATASET).is_file():
            raise SpecError(f"checkpoint {path} records no dataset version")
        table = pq.read_table(path / ckpt.DATASET)
        summary = {
            "version": record["version"],
            "checkpoint": str(path),
            "counts": manifest.counts(table),
        }
        return summary, table
    return manifest.read(datasets_root(cache_dir), target)


def diff(a: str, b: str, cache_dir: str, out: Print = print) -> int:
    """What changed between two versions (or checkpoints); 1 if anything did, as diff(1)."""
    (sa, ta), (sb, tb) = load(a, cache_dir), load(b, cache_dir)
    changes = manifest.diff(ta, tb)
    out(f"--- {sa['version']}\n+++ {sb['version']}")
    for r in changes["added"]:
        out(f"added    {r['document']} ({r['split']})")
    for r in changes["removed"]:
        out(f"removed  {r['document']} ({r['split']})")
    for r in changes["changed"]:
        out(
            f"changed  {r['document']}: sha256 {r['sha256'][0][:12]} -> {r['sha256'][1][:12]}, "
            f"{r['size'][0]} -> {r['size'][1]} bytes"
        )
    for r in changes["moved"]:
        out(f"moved    {r['document']}: {r['split'][0]} -> {r['split'][1]}")
    n = sum(map(len, changes.values()))
    out(f"{n} document(s) differ" if n else "no differences")
    return 1 if n else 0


def dedup(
    source: str,
    overrides: Iterable[str],
    address: str | None,
    out_path: str | None,
    out: Print = print,
) -> dict[str, Any]:
    """Dedup a corpus alone, on a Ray cluster (or an embedded local Ray): signatures and
    verification in Ray Data tasks, only per-document rows here. Writes the manifest
    (kept documents as ``train``, the rest ``dropped``) to ``out_path`` if given."""
    from genai import cluster
    from genai.data.corpus import resolve_files
    from genai.data.dataset import CorpusReader, manifest_path, manifest_table, root_of
    from genai.data.dedup_pipeline import FileRef, deduplicate
    from genai.families.lm import DataSpec
    from genai.specio import apply_overrides, validation_message

    raw = apply_overrides({"source": source}, overrides)
    try:
        spec = DataSpec.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(validation_message(exc, "data.")) from None
    files = resolve_files(spec)
    out(f"dedup: {len(files)} files under {spec.source}")
    with cluster.connect(address):
        docs, result = deduplicate(
            [FileRef(str(f)) for f in files],
            CorpusReader(spec, set()),
            spec.dedup,
            out,
            ray_data=True,  # the command is for corpora a cluster should share out
        )
    if out_path:
        root = root_of(spec, files)
        names = [manifest_path(p, root) for p in docs.paths]
        split = ["train" if k else "dropped" for k in result.kept]
        table = manifest_table(docs, result, split, names)
        Path(out_path).parent.mkdir(parents=True, exist_ok=True)
        manifest.write(table, Path(out_path))
        out(f"dedup: wrote the manifest ({manifest.version_id(table)}) to {out_path}")
    return result.report
