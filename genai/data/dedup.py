"""Deduplication of a text corpus: exact copies and near duplicates, as Ray Data stages.

1. **Signatures** (``map_batches``, in parallel): each document's text is normalized (NFKC,
   runs of whitespace collapsed) and hashed, for exact copies; its n-gram shingles get a
   MinHash signature (``rensa``), cut into ``bands`` bands of ``rows`` values, each band
   hashed to 64 bits. Only (document, exact hash, band hashes) rows come back to the driver.
2. **Candidates** (driver): documents that share the exact hash, or a band's hash. A bucket
   gives star pairs (its first document with each other one): clusters need connectivity,
   not every pair.
3. **Verification** (``map_batches`` over the candidate pairs, which name their documents
   by path and record): the true Jaccard similarity of the two shingle sets, beside the
   signatures' estimate. A near pair is an edge only at true Jaccard >= ``threshold``, so
   LSH's false positives never merge documents; the pairs LSH never proposes are its misses.
4. **Clusters** (driver): union-find over the edges. Each cluster keeps one document: a real
   one before a synthetic one, then the first in corpus order (path, then record).

Without a running Ray (unit tests, a bare library call) the same batch functions run in
this process.

Why ``rensa`` and not ``datasketch``: both give unbiased MinHash estimates, but rensa's
signatures are computed in Rust, an order of magnitude faster than datasketch's numpy
update on this kind of text (``bench/dedup.py`` runs datasketch as its baseline).
"""

from __future__ import annotations

import functools
import hashlib
import re
import unicodedata
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from genai.specbase import Section

_WORD = re.compile(r"[^\W_]+")  # BigCode's shingles: runs of letters and digits, lowercased


class DedupSpec(Section):
    """``data.dedup``: exact and near-duplicate removal before the held-out split."""

    enabled: bool = Field(True, description="false: every document is kept")
    near: bool = Field(True, description="false: exact copies only (no MinHash)")
    ngram: int = Field(5, ge=1, le=64, description="shingle length, in units")
    unit: Literal["word", "char"] = Field(
        "word", description="word: runs of letters and digits, lowercased; char: characters"
    )
    num_perm: int = Field(128, ge=16, le=1024, description="MinHash permutations")
    threshold: float = Field(
        0.7, gt=0.0, lt=1.0, description="Jaccard similarity at which two documents are one"
    )
    bands: int | None = Field(
        None,
        ge=1,
        description="LSH bands (rows = num_perm // bands); default: derived from threshold",
    )
    drop: bool = Field(
        True,
        description="false: duplicates stay, but a cluster still never straddles the split",
    )
    seed: int = Field(1, ge=0, description="MinHash seed")
    examples: int = Field(5, ge=0, le=100, description="example pairs in the report")

    @model_validator(mode="after")
    def _bands_fit(self) -> DedupSpec:
        if self.bands is not None and self.bands > self.num_perm:
            raise ValueError(f"bands ({self.bands}) must be at most num_perm ({self.num_perm})")
        return self

    def lsh_shape(self) -> tuple[int, int]:
        """(bands, rows per band)."""
        if self.bands is not None:
            return self.bands, self.num_perm // self.bands
        return optimal_bands(self.threshold, self.num_perm)


@functools.lru_cache
def optimal_bands(threshold: float, num_perm: int) -> tuple[int, int]:
    """The (bands, rows) with bands x rows <= num_perm that minimize the area of false
    positives below ``threshold`` plus false negatives above it, equally weighted (the
    rule datasketch's ``MinHashLSH`` uses)."""
    below = np.linspace(0.0, threshold, 201)
    above = np.linspace(threshold, 1.0, 201)
    best, shape = float("inf"), (1, num_perm)
    for b in range(1, num_perm + 1):
        for r in range(1, num_perm // b + 1):
            fp = np.trapezoid(1 - (1 - below**r) ** b, below)
            fn = np.trapezoid((1 - above**r) ** b, above)
            if fp + fn < best:
                best, shape = fp + fn, (b, r)
    return shape


def normalize(text: str) -> str:
    """NFKC, and every run of whitespace one space (no leading or trailing space)."""
    if not unicodedata.is_normalized("NFKC", text):  # a cheap check; most text already is
        text = unicodedata.normalize("NFKC", text)
    return " ".join(text.split())


def exact_key(text: str) -> str:
    """The hash that exact copies share: of the normalized text."""
    return hashlib.sha256(normalize(text).encode("utf-8", "replace")).hexdigest()[:32]


def _units(text: str, unit: str) -> list[str] | str:
    return normalize(text) if unit == "char" else _WORD.findall(text.lower())


def shingles(text: str, ngram: int, unit: str) -> list[str]:
    """The document's set of n-grams as strings (a document shorter than n is one
    shingle): what a MinHash library is usually fed (bench/dedup.py's baseline)."""
    units = _units(text, unit)
    joiner = "" if unit == "char" else " "
    if len(units) <= ngram:
        return [joiner.join(units)]
    return list({joiner.join(units[i : i + ngram]) for i in range(len(units) - ngram + 1)})


_MUL = np.uint64(0x9E3779B97F4A7C15)


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: every input bit moves every output bit."""
    h = h ^ (h >> np.uint64(30))
    h = h * np.uint64(0xBF58476D1CE4E5B9)
    h = h ^ (h >> np.uint64(27))
    h = h * np.uint64(0x94D049BB133111EB)
    return h ^ (h >> np.uint64(31))


def shingle_hashes(text: str, ngram: int, unit: str) -> np.ndarray:
    """The same n-gram set as :func:`shingles`, as sorted unique 64-bit hashes: each unit
    hashed once (CRC-32 of a word, a character's code point), the n-grams combined in
    numpy. The same text gives the same hashes in every process."""
    units = _units(text, unit)
    if unit == "char":
        codes = np.frombuffer(units.encode("utf-32-le"), np.uint32).astype(np.uint64)
    else:
        codes = np.fromiter((zlib.crc32(w.encode()) for w in units), np.uint64, len(units))
    n = min(ngram, len(codes))
    if n == 0:
        return np.zeros(1, np.uint64)
    h = np.zeros(len(codes) - n + 1, np.uint64)
    with np.errstate(over="ignore"):
        for k in range(n):  # a polynomial of the n units, wrapping mod 2^64
            h = h * _MUL + codes[k : len(codes) - n + 1 + k] + np.uint64(1)
        return np.unique(_mix(h))


def jaccard(a: Iterable[Any], b: Iterable[Any]) -> float:
    sa, sb = set(a), set(b)
    return len(sa & sb) / max(1, len(sa | sb))


def _jaccard_sorted(a: np.ndarray, b: np.ndarray) -> float:
    both = len(np.intersect1d(a, b, assume_unique=True))
    return both / max(1, len(a) + len(b) - both)


def digests(hash_sets: Sequence[np.ndarray], spec: DedupSpec) -> np.ndarray:
    """MinHash signatures (rensa, in one call) of shingle-hash sets: (documents, num_perm)."""
    from rensa import RMinHash

    offsets = np.cumsum([0, *map(len, hash_sets)], dtype=np.uint64)
    flat = np.concatenate(hash_sets) if hash_sets else np.zeros(0, np.uint64)
    matrix = RMinHash.digest_matrix_from_flat_token_hashes(flat, offsets, spec.num_perm, spec.seed)
    return np.asarray(matrix.to_rows(), dtype=np.uint32).reshape(len(hash_sets), spec.num_perm)


def band_hashes(sig: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """Each band of ``rows`` signature values as one 64-bit hash: (documents, bands)."""
    cut = sig[:, : bands * rows].reshape(len(sig), bands, rows).astype(np.uint64)
    h = np.zeros((len(sig), bands), np.uint64)
    with np.errstate(over="ignore"):
        for k in range(rows):
            h = h * _MUL + cut[:, :, k] + np.uint64(1)
        return _mix(h)


def signatures(batch: dict[str, Any], spec: DedupSpec) -> dict[str, Any]:
    """Ray Data batch fn: ``text`` in; its ``size`` (UTF-8 bytes), ``sha256``, ``exact`` (the
    normalized text's hash) and ``bands`` (uint64, one per band) out, the text dropped:
    only these rows travel to the driver."""
    bands, rows = spec.lsh_shape()
    texts = list(batch["text"])
    out = {k: np.asarray(v) for k, v in batch.items() if k != "text"}
    raw = [t.encode("utf-8", "replace") for t in texts]
    out["size"] = np.asarray([len(b) for b in raw], np.int64)
    out["sha256"] = np.asarray([hashlib.sha256(b).hexdigest() for b in raw])
    out["exact"] = np.asarray([exact_key(t) for t in texts])
    if spec.near and texts:
        sig = digests([shingle_hashes(t, spec.ngram, spec.unit) for t in texts], spec)
        out["bands"] = band_hashes(sig, bands, rows)
    else:
        out["bands"] = np.zeros((len(texts), bands if spec.near else 0), np.uint64)
    return out


def candidate_pairs(
    exact: Sequence[str], bands: np.ndarray
) -> tuple[set[tuple[int, int]], set[tuple[int, int]]]:
    """(exact pairs, near candidate pairs) over row positions: star pairs per bucket."""
    exact_pairs: set[tuple[int, int]] = set()
    first: dict[str, int] = {}
    for i, key in enumerate(exact):
        j = first.setdefault(key, i)
        if j != i:
            exact_pairs.add((j, i))
    near: set[tuple[int, int]] = set()
    for column in bands.T:
        order = np.argsort(column, kind="stable")
        keys = column[order]
        starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
        ends = np.r_[starts[1:], len(keys)]
        for s, e in zip(starts, ends, strict=True):
            if e - s > 1:
                head = int(order[s])
                near.update((min(head, int(o)), max(head, int(o))) for o in order[s + 1 : e])
    return exact_pairs, near - exact_pairs


def verify(
    batch: dict[str, Any], spec: DedupSpec, read: Callable[[str, int], str]
) -> dict[str, Any]:
    """Ray Data batch fn over candidate pairs (``path_a``, ``record_a``, ``path_b``,
    ``record_b``): adds ``jaccard`` (true, of the shingle sets) and ``estimate`` (the share
    of equal MinHash values)."""
    cache: dict[tuple[str, int], np.ndarray] = {}

    def hashes(path: str, record: int) -> np.ndarray:
        if (path, record) not in cache:
            cache[(path, record)] = shingle_hashes(read(path, record), spec.ngram, spec.unit)
        return cache[(path, record)]

    pairs = list(
        zip(batch["path_a"], batch["record_a"], batch["path_b"], batch["record_b"], strict=True)
    )
    sets = [(hashes(str(a), int(ra)), hashes(str(b), int(rb))) for a, ra, b, rb in pairs]
    true = [_jaccard_sorted(x, y) for x, y in sets]
    sig = digests([h for pair in sets for h in pair], spec).reshape(len(sets), 2, spec.num_perm)
    estimate = (sig[:, 0] == sig[:, 1]).mean(axis=1) if len(sets) else np.zeros(0)
    return {**batch, "jaccard": np.asarray(true), "estimate": np.asarray(estimate)}


class UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


@dataclass
class DedupResult:
    """Per document (in the order given): its cluster (the kept member's position) and
    whether it is kept; plus the report."""

    cluster: list[int]
    kept: list[bool]
    report: dict[str, Any] = field(default_factory=dict)


def cluster_documents(
    paths: Sequence[str],
    records: Sequence[int],
    sizes: Sequence[int],
    synthetic: Sequence[bool],
    exact: Sequence[str],
    bands: np.ndarray,
    checked: dict[str, np.ndarray],
    spec: DedupSpec,
) -> DedupResult:
    """Union-find over exact pairs and verified near pairs (``checked``: the verification
    stage's columns, with ``a``/``b`` positions), one kept document per cluster."""
    n = len(paths)
    uf = UnionFind(n)
    exact_pairs, _ = candidate_pairs(exact, np.zeros((n, 0), np.uint64))
    for a, b in exact_pairs:
        uf.union(a, b)
    near = [
        (int(a), int(b), float(j), float(e))
        for a, b, j, e in zip(
            checked.get("a", []),
            checked.get("b", []),
            checked.get("jaccard", []),
            checked.get("estimate", []),
            strict=True,
        )
    ]
    accepted = [p for p in near if p[2] >= spec.threshold]
    for a, b, _, _ in accepted:
        uf.union(a, b)
    members: dict[int, list[int]] = {}
    for i in range(n):
        members.setdefault(uf.find(i), []).append(i)
    cluster, kept = [0] * n, [False] * n
    for group in members.values():
        # real before synthetic, then corpus order (path, then record)
        keep = min(group, key=lambda i: (synthetic[i], paths[i], records[i]))
        for i in group:
            cluster[i] = keep
        kept[keep] = True
    if not spec.drop:
        kept = [True] * n
    dropped = [i for i in range(n) if not kept[i]]
    examples = sorted(accepted, key=lambda p: p[2])[: spec.examples]
    report = {
        "documents": n,
        "clusters": len(members),
        "duplicate_clusters": sum(1 for g in members.values() if len(g) > 1),
        "exact_duplicates": len(exact_pairs),
        "near_candidates": len(near),
        "near_accepted": len(accepted),
        "near_rejected": len(near) - len(accepted),
        "dropped_documents": len(dropped),
        "dropped_bytes": int(sum(sizes[i] for i in dropped)),
        "bytes": int(sum(sizes)),
        "lsh": dict(zip(("bands", "rows"), spec.lsh_shape(), strict=True)),
        "examples": [
            {
                "a": f"{paths[a]}#{records[a]}" if records[a] else paths[a],
                "b": f"{paths[b]}#{records[b]}" if records[b] else paths[b],
                "estimated_jaccard": round(e, 4),
                "true_jaccard": round(j, 4),
            }
            for a, b, j, e in examples
        ],
    }
    return DedupResult(cluster=cluster, kept=kept, report=report)
