"""Dedup throughput and agreement: genai's dedup stages (rensa signatures in Ray Data tasks
on a local 2-CPU Ray, verification of LSH candidates by true Jaccard, union-find) against a
single-process datasketch loop on the same documents, shingles and threshold.

    python bench/dedup.py                     # the whole standard library (tests included)
    python bench/dedup.py --repeats 1 --max-files 400

The baseline is what a datasketch user writes: for each document ``MinHash.update_batch``
over the same shingles, ``MinHashLSH.insert``; then each document's ``query`` gives the
candidates, verified by true Jaccard as genai does, and union-find makes clusters. Both
read the files themselves. Documents/s is the median over ``--repeats`` alternating runs;
Ray's start-up is outside genai's time (a cluster is already up when a job dedups).
Agreement: the verified pairs both find, those only one finds (LSH misses on one side),
and whether the two partitions into clusters are the same.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sysconfig
import time
from pathlib import Path

import ray
from datasketch import MinHash, MinHashLSH

from genai.data.corpus import read_documents
from genai.data.dedup import DedupSpec, UnionFind, jaccard, shingles
from genai.data.dedup_pipeline import FileRef, deduplicate
from genai.families.lm import DataSpec
from genai.hardware import machine_line


def corpus(max_files: int) -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.rglob("*.py") if "site-packages" not in p.parts)
    return files[:max_files] if max_files else files


def partition(pairs: set[tuple[int, int]], n: int) -> set[frozenset[int]]:
    uf = UnionFind(n)
    for a, b in pairs:
        uf.union(a, b)
    groups: dict[int, set[int]] = {}
    for i in range(n):
        groups.setdefault(uf.find(i), set()).add(i)
    return {frozenset(g) for g in groups.values() if len(g) > 1}


def run_datasketch(files: list[Path], data: DataSpec, spec: DedupSpec) -> tuple[float, set, int]:
    t0 = time.perf_counter()
    texts = [t for f in files for t in read_documents(f, data)]
    lsh = MinHashLSH(threshold=spec.threshold, num_perm=spec.num_perm)
    sets, hashes = [], []
    for i, text in enumerate(texts):
        s = shingles(text, spec.ngram, spec.unit)
        m = MinHash(num_perm=spec.num_perm, seed=spec.seed)
        m.update_batch([x.encode() for x in s])
        lsh.insert(i, m)
        sets.append(s)
        hashes.append(m)
    exact: dict[str, int] = {}
    pairs = set()
    from genai.data.dedup import exact_key

    for i, text in enumerate(texts):
        j = exact.setdefault(exact_key(text), i)
        if j != i:
            pairs.add((j, i))
    for i, m in enumerate(hashes):
        for j in lsh.query(m):
            if j > i and jaccard(sets[i], sets[j]) >= spec.threshold:
                pairs.add((i, j))
    return time.perf_counter() - t0, pairs, len(texts)


def run_genai(files: list[Path], data: DataSpec, spec: DedupSpec) -> tuple[float, set, int]:
    from genai.data.dataset import CorpusReader

    t0 = time.perf_counter()
    docs, result = deduplicate(
        [FileRef(str(f)) for f in files], CorpusReader(data, set()), spec, lambda _: None, True
    )
    seconds = time.perf_counter() - t0
    pairs = {(min(i, c), max(i, c)) for i, c in enumerate(result.cluster) if i != c}
    return seconds, pairs, len(docs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--max-files", type=int, default=0, help="the first N files (0: all)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threshold", type=float, default=DedupSpec().threshold)
    args = ap.parse_args()
    files = corpus(args.max_files)
    data = DataSpec(source="stdlib")
    spec = DedupSpec(threshold=args.threshold)
    size = sum(f.stat().st_size for f in files)
    print(machine_line())
    print(
        f"corpus: {len(files)} files, {size / 1e6:.1f} MB; {spec.num_perm} permutations, "
        f"threshold {spec.threshold}, {spec.ngram}-{spec.unit} shingles, LSH {spec.lsh_shape()}"
    )
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    times: dict[str, list[float]] = {"genai": [], "datasketch": []}
    found: dict[str, set] = {}
    n_docs = 0
    for _ in range(args.repeats):
        for name, fn in (("genai", run_genai), ("datasketch", run_datasketch)):
            seconds, pairs, n_docs = fn(files, data, spec)
            times[name].append(seconds)
            found[name] = pairs
            print(f"  {name}: {seconds:.1f}s, {len(pairs)} duplicate documents", flush=True)
    ray.shutdown()
    g, d = partition(found["genai"], n_docs), partition(found["datasketch"], n_docs)
    # genai's pairs are (kept, member) stars: compare by cluster membership
    same_cluster = lambda parts: {(a, b) for p in parts for a in p for b in p if a < b}  # noqa: E731
    pg, pd = same_cluster(g), same_cluster(d)
    med = {k: statistics.median(v) for k, v in times.items()}
    out = {
        "documents": n_docs,
        "docs_per_s": {k: round(n_docs / v, 1) for k, v in med.items()},
        "speedup": round(med["datasketch"] / med["genai"], 2),
        "clusters": {"genai": len(g), "datasketch": len(d)},
        "same_partition": g == d,
        "pairs_both": len(pg & pd),
        "pairs_only_genai": len(pg - pd),
        "pairs_only_datasketch": len(pd - pg),
    }
    print(json.dumps(out, indent=2))
    # the pairs only one side put in a cluster, with their true Jaccard: LSH misses on the
    # other side (a pair joins a cluster through a chain of verified pairs, so a pair in
    # the same cluster may itself sit below the threshold)
    texts = [t for f in files for t in read_documents(f, data)]
    root = Path(sysconfig.get_paths()["stdlib"])
    names = [str(f.relative_to(root)) for f in files for _ in read_documents(f, data)]
    for side, diff in (("genai only", pg - pd), ("datasketch only", pd - pg)):
        for a, b in sorted(diff)[:12]:
            j = jaccard(
                shingles(texts[a], spec.ngram, spec.unit), shingles(texts[b], spec.ngram, spec.unit)
            )
            print(f"  {side}: {names[a]} ~ {names[b]}: Jaccard {j:.3f}")


if __name__ == "__main__":
    main()
