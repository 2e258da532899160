"""From files to a versioned set of documents: read, deduplicate, split, write the manifest.

The held-out split is drawn over dedup **clusters**, never over single documents: a
cluster's documents all train or all stay out, so no near copy of a held-out file is
trained on. By default it is drawn from real documents only; synthetic ones (generated
text exported from the generation log) train.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from genai.data import manifest
from genai.data.corpus import iter_records, jsonl_records, read_documents, resolve_files
from genai.data.dedup import DedupResult
from genai.data.dedup_pipeline import Documents, FileRef, deduplicate
from genai.specbase import SpecError


class CorpusReader:
    """A file's documents by path (picklable: Ray Data tasks read with it)."""

    def __init__(self, spec: Any, synthetic: set[str]) -> None:
        self.spec, self.synthetic = spec, synthetic

    def __call__(self, path: str) -> Iterator[str]:
        if path in self.synthetic:
            return (r["text"] for r in read_synthetic(Path(path)))
        return read_documents(Path(path), self.spec)


def read_synthetic(path: Path) -> Iterator[dict[str, Any]]:
    """The records of an exported generations corpus (``genai generations export
    --dataset``): ``text``, ``generation_id``, ``model``."""
    for lineno, record in jsonl_records(path, "data.synthetic"):
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise SpecError(f"{path}:{lineno}: no string field 'text' (data.synthetic)")
        if record["text"]:
            yield record


def synthetic_files(spec: Any) -> list[Path]:
    if not spec.synthetic:
        return []
    src = Path(spec.synthetic).expanduser()
    files = sorted(src.rglob("*.jsonl")) if src.is_dir() else [src] if src.is_file() else []
    if not files:
        raise SpecError(f"data.synthetic {spec.synthetic!r} holds no .jsonl files")
    return files


@dataclass
class Corpus:
    """The documents of a prepared dataset, their split, and the manifest."""

    texts: list[str]
    split: list[str]  # train | val | dropped
    order: list[int]  # training documents, in the seeded order they are tokenized in
    table: pa.Table
    version: str
    report: dict[str, Any]

    def documents(self, split: str) -> list[str]:
        if split == "train":
            return [self.texts[i] for i in self.order]
        return [t for t, s in zip(self.texts, self.split, strict=True) if s == split]


def assemble(spec: Any, log=print) -> Corpus:
    """Read the source (and synthetic) documents, dedup them, hold out whole clusters."""
    files = resolve_files(spec)
    root = root_of(spec, files)
    texts, paths, records, synthetic, gen_ids, gen_models = [], [], [], [], [], []
    for path, record, text in iter_records(files, spec):
        texts.append(text)
        paths.append(str(path))
        records.append(record)
        synthetic.append(False)
        gen_ids.append(None)
        gen_models.append(None)
    extra = synthetic_files(spec)
    for path in extra:
        for record, row in enumerate(read_synthetic(path)):
            texts.append(row["text"])
            paths.append(str(path))
            records.append(record)
            synthetic.append(True)
            gen_ids.append(row.get("generation_id"))
            gen_models.append(row.get("model"))
    if len(texts) < 2:
        raise ValueError(
            f"data.source {spec.source!r} holds {len(texts)} document(s); the held-out split "
            "is made of whole documents, so it needs at least two"
        )
    counts: dict[str, int] = {}
    for p in paths:
        counts[p] = counts.get(p, 0) + 1
    extra_names = {str(p) for p in extra}
    refs = [FileRef(p, n, p in extra_names) for p, n in counts.items()]
    docs, result = deduplicate(refs, CorpusReader(spec, extra_names), spec.dedup, log)
    if docs.paths != paths or docs.records != records:
        raise RuntimeError("data: the corpus changed while it was being read; run again")
    sizes = docs.sizes
    split, order = _split(result, sizes, synthetic, spec)
    synthetic_root = Path(spec.synthetic).expanduser() if spec.synthetic else None
    names = [manifest_path(p, root, synthetic_root) for p in paths]
    table = manifest_table(docs, result, split, names, gen_ids, gen_models)
    version = manifest.version_id(table)
    report = {"root": str(root), "dedup": result.report}
    return Corpus(texts, split, order, table, version, report)


def manifest_table(
    docs: Documents,
    result: DedupResult,
    split: list[str],
    names: list[str],
    generation_ids: list[str | None] | None = None,
    generation_models: list[str | None] | None = None,
) -> pa.Table:
    """The manifest rows of deduplicated documents (``names``: their manifest paths)."""
    return manifest.build(
        {
            "path": names,
            "record": docs.records,
            "size": docs.sizes,
            "sha256": docs.sha256,
            "split": split,
            "cluster": result.cluster,
            "kept": result.kept,
            "duplicate_of": [
                None if result.kept[i] else manifest.document_name(names[c], docs.records[c])
                for i, c in enumerate(result.cluster)
            ],
            "origin": ["synthetic" if s else "real" for s in docs.synthetic],
            "generation_id": generation_ids or [None] * len(docs),
            "generation_model": generation_models or [None] * len(docs),
        }
    )


def _split(
    result: DedupResult, sizes: list[int], synthetic: list[bool], spec: Any
) -> tuple[list[str], list[int]]:
    """Each document's split; the training documents in a seeded order of their clusters."""
    from genai.data.tokens import hold_out

    clusters: dict[int, list[int]] = {}
    for i, c in enumerate(result.cluster):
        if result.kept[i]:
            clusters.setdefault(c, []).append(i)
    units = list(clusters.values())
    eligible = [
        k
        for k, members in enumerate(units)
        if spec.hold_out_synthetic or not any(synthetic[i] for i in members)
    ]
    if not eligible:
        raise SpecError("data: no real documents to hold out (data.hold_out_synthetic is false)")
    unit_sizes = [sum(sizes[i] for i in units[k]) for k in eligible]
    _, held = hold_out(unit_sizes, spec.val_fraction, spec.seed)
    val_units = {eligible[k] for k in held}
    split = ["dropped"] * len(sizes)
    for k, members in enumerate(units):
        for i in members:
            split[i] = "val" if k in val_units else "train"
    # the training order: a seeded permutation of the training clusters (members in order)
    train_units = [k for k in range(len(units)) if k not in val_units]
    perm = np.random.default_rng(spec.seed).permutation(len(train_units))
    order = [i for p in perm for i in units[train_units[int(p)]]]
    return split, order


def root_of(spec: Any, files: list[Path]) -> Path:
    """What manifest paths are relative to: the corpus directory (the stdlib's for
    ``stdlib``), so a version id does not depend on where the corpus lies."""
    if spec.source == "stdlib":
        import sysconfig

        return Path(sysconfig.get_paths()["stdlib"])
    src = Path(spec.source).expanduser()
    if src.is_dir():
        return src
    return Path(os.path.commonpath([str(f.parent) for f in files]))


def manifest_path(path: str, root: Path, synthetic_root: Path | None = None) -> str:
    """A document's manifest path: relative to the corpus root, or ``synthetic/...``
    relative to data.synthetic."""
    p = Path(path)
    if synthetic_root is not None and (p == synthetic_root or synthetic_root in p.parents):
        return str(
            Path("synthetic") / (p.relative_to(synthetic_root) if p != synthetic_root else p.name)
        )
    return str(p.relative_to(root)) if root in p.parents else path


def whole_items_manifest(
    spec: Any,
    files: list[Path],
    items: list[tuple[Path, int, int, str]],
    held: set[int],
    dropped: dict[int, int] | None = None,
) -> pa.Table:
    """The manifest of a dataset held out by whole items that are not text documents (a
    chat conversation, a pre-tokenized file): ``items`` are (file, record, size, sha256);
    ``dropped`` maps an exact copy to the item it copies."""
    dropped = dropped or {}
    root = root_of(spec, files)
    names = [manifest_path(str(p), root) for p, _, _, _ in items]
    return manifest.build(
        {
            "path": names,
            "record": [r for _, r, _, _ in items],
            "size": [n for _, _, n, _ in items],
            "sha256": [h for _, _, _, h in items],
            "split": [
                "dropped" if i in dropped else "val" if i in held else "train"
                for i in range(len(items))
            ],
            "cluster": [dropped.get(i, i) for i in range(len(items))],
            "kept": [i not in dropped for i in range(len(items))],
            "duplicate_of": [
                manifest.document_name(names[dropped[i]], items[dropped[i]][1])
                if i in dropped
                else None
                for i in range(len(items))
            ],
            "origin": ["real"] * len(items),
        }
    )


def register(table: pa.Table, spec: Any, report: dict[str, Any] | None = None) -> str:
    """Store the version under the spec's ``cache_dir``; returns its id."""
    summary = {"source": spec.source, "spec": spec.model_dump(mode="json"), **(report or {})}
    return manifest.register(table, summary, Path(spec.cache_dir).absolute() / "datasets")
