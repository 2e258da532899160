"""Dedup (exact + MinHash LSH), splits over clusters, manifests and dataset versions.

The planted corpus: stdlib modules, an exact copy (whitespace changed), a copy with one
comment reworded, and a copy with a variable renamed throughout; the rest are distinct
modules, none of which may be merged."""

from __future__ import annotations

import re
import shutil
import sysconfig
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from genai.cli import main
from genai.data import manifest
from genai.data.dataset import assemble
from genai.data.dedup import DedupSpec, jaccard, optimal_bands, shingles
from genai.data.tokens import prepare
from genai.families.lm import DataSpec
from genai.specbase import SpecError

STDLIB = Path(sysconfig.get_paths()["stdlib"])
DISTINCT = ["textwrap", "shlex", "fnmatch", "glob", "bisect", "heapq", "colorsys", "keyword"]
DISTINCT += ["calendar", "csv", "dataclasses", "difflib", "fractions", "getopt", "gettext"]


def planted(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name in DISTINCT:
        shutil.copy(STDLIB / f"{name}.py", root / f"{name}.py")
    textwrap = (STDLIB / "textwrap.py").read_text()
    (root / "zz_exact.py").write_text(textwrap.replace("\n\n", "\n   \n"))
    comment = "# Hardcode the recognized whitespace characters"
    assert comment in textwrap
    (root / "zz_comment.py").write_text(textwrap.replace(comment, "# The whitespace we know of"))
    shlex = (STDLIB / "shlex.py").read_text()
    (root / "zz_renamed.py").write_text(re.sub(r"\bpunctuation_chars\b", "punct", shlex))
    return root


def _spec(root: Path, **kw) -> DataSpec:
    return DataSpec(
        **{"source": str(root), "val_fraction": 0.3, "cache_dir": str(root.parent / "cache"), **kw}
    )


def _rows(table) -> dict[str, dict]:
    return {r["path"]: r for r in table.to_pylist()}


def test_planted_duplicates_are_found_and_distinct_files_are_not_merged(tmp_path):
    logs: list[str] = []
    corpus = assemble(_spec(planted(tmp_path / "corpus")), logs.append)
    rows = _rows(corpus.table)
    assert rows["zz_exact.py"]["duplicate_of"] == "textwrap.py"
    assert rows["zz_comment.py"]["duplicate_of"] == "textwrap.py"
    assert rows["zz_renamed.py"]["duplicate_of"] == "shlex.py"
    for name in DISTINCT:
        assert rows[f"{name}.py"]["kept"], name
    clusters = {r["cluster"] for r in rows.values()}
    assert len(clusters) == len(DISTINCT)  # three copies joined two clusters, no others
    # the rule: the first in corpus order is kept, the copies dropped, never split apart
    assert {r["split"] for n, r in rows.items() if n.startswith("zz_")} == {"dropped"}
    assert {rows["textwrap.py"]["split"], rows["shlex.py"]["split"]} <= {"train", "val"}
    report = corpus.report["dedup"]
    assert report["dropped_documents"] == 3 and report["exact_duplicates"] == 1
    assert report["dropped_bytes"] == sum(
        rows[f"zz_{k}.py"]["size"] for k in ("exact", "comment", "renamed")
    )
    pairs = {(e["a"].rsplit("/", 1)[-1], e["b"].rsplit("/", 1)[-1]) for e in report["examples"]}
    assert pairs == {("shlex.py", "zz_renamed.py"), ("textwrap.py", "zz_comment.py")}
    for e in report["examples"]:
        assert e["true_jaccard"] >= 0.7 and abs(e["estimated_jaccard"] - e["true_jaccard"]) < 0.2
    assert any("dedup: 18 documents -> 15 clusters" in m for m in logs), logs


def test_without_dropping_a_cluster_never_straddles_the_split(tmp_path):
    root = planted(tmp_path / "corpus")
    for seed in range(6):  # several draws: the copies must follow their original each time
        corpus = assemble(_spec(root, seed=seed, dedup={"drop": False}), lambda _: None)
        rows = _rows(corpus.table)
        assert all(r["kept"] for r in rows.values())
        for copy, original in [
            ("zz_exact", "textwrap"),
            ("zz_comment", "textwrap"),
            ("zz_renamed", "shlex"),
        ]:
            assert rows[f"{copy}.py"]["split"] == rows[f"{original}.py"]["split"], seed
        assert {r["split"] for r in rows.values()} == {"train", "val"}


def test_dedup_off_keeps_every_document(tmp_path):
    corpus = assemble(_spec(planted(tmp_path / "corpus"), dedup={"enabled": False}), lambda _: None)
    assert all(r["kept"] and r["split"] != "dropped" for r in corpus.table.to_pylist())


def test_lsh_shape_and_shingles():
    assert optimal_bands(0.7, 128) == (14, 9)  # datatrove's 14 x 8 at threshold ~0.72
    assert DedupSpec(bands=16).lsh_shape() == (16, 8)
    with pytest.raises(ValueError, match="bands .* must be at most num_perm"):
        DedupSpec(bands=300)
    words = shingles("def f(x):\n    return x + 1", 3, "word")
    assert set(words) == {"def f x", "f x return", "x return x", "return x 1"}
    assert shingles("a b", 5, "word") == ["a b"]
    assert jaccard(words, words[:2]) == 0.5


def test_versions_same_files_same_id_one_change_new_id_and_diff_names_it(tmp_path, capsys):
    root = planted(tmp_path / "corpus")
    spec = _spec(root, tokenizer={"vocab_size": 300})
    first = prepare(spec, log=lambda _: None)
    # the same files, prepared again from scratch (another cache): the same id
    again = prepare(
        spec.model_copy(update={"cache_dir": str(tmp_path / "cache2")}), log=lambda _: None
    )
    assert first.dataset == again.dataset
    table = pq.read_table(first.dir / manifest.MANIFEST)
    assert manifest.version_id(table) == first.dataset
    assert len(table) == 18 and set(table.column("origin").to_pylist()) == {"real"}

    (root / "glob.py").write_text((root / "glob.py").read_text() + "\n# one more line\n")
    changed = prepare(spec, log=lambda _: None)
    assert changed.dataset != first.dataset

    cache = str(tmp_path / "cache")
    assert main(["data", "ls", "--cache-dir", cache]) == 0
    listed = capsys.readouterr().out
    assert first.dataset in listed and changed.dataset in listed
    assert main(["data", "diff", first.dataset[:8], changed.dataset, "--cache-dir", cache]) == 1
    out = capsys.readouterr().out
    assert "changed  glob.py: sha256" in out
    assert [line for line in out.splitlines() if line.startswith("changed")] == [
        line for line in out.splitlines() if "glob.py" in line and line.startswith("changed")
    ]
    assert main(["data", "show", changed.dataset, "--files", "--cache-dir", cache]) == 0
    out = capsys.readouterr().out
    assert "dropped" in out and "duplicate of textwrap.py" in out
    assert main(["data", "show", "nope", "--cache-dir", cache]) == 2
    assert "dataset version 'nope': no stored versions match" in capsys.readouterr().err


def test_a_bad_dedup_field_is_named():
    with pytest.raises(SpecError, match=r"data\.dedup\.threshold"):
        from genai.config import parse_job

        parse_job({"name": "x", "model": {"family": "lm"}, "data": {"dedup": {"threshold": 1.5}}})


@pytest.mark.e2e
def test_genai_data_dedup_runs_the_stages_on_ray_data(ray_session, tmp_path, capsys):
    """The command alone, on the test session's Ray: the signature stage in Ray Data tasks
    (the command always uses them; a corpus this small is otherwise done in-process), the
    same clusters as above."""
    root = planted(tmp_path / "corpus")
    out = tmp_path / "dedup.parquet"
    assert main(["data", "dedup", str(root), "--set", "dedup.num_perm=256", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "dedup: 18 files under" in printed and "dropped 3 documents" in printed
    rows = _rows(pq.read_table(out))
    assert {n: r["duplicate_of"] for n, r in rows.items() if not r["kept"]} == {
        "zz_exact.py": "textwrap.py",
        "zz_comment.py": "textwrap.py",
        "zz_renamed.py": "shlex.py",
    }
    assert {r["split"] for r in rows.values() if r["kept"]} == {"train"}
    assert main(["data", "dedup", str(root), "--set", "dedup.num_perm=8"]) == 2
    assert "data.dedup.num_perm" in capsys.readouterr().err


def test_synthetic_documents_train_beside_real_ones_and_are_never_held_out(tmp_path):
    import json

    root = planted(tmp_path / "corpus")
    synthetic = tmp_path / "synthetic"
    synthetic.mkdir()
    lines = [
        {
            "text": f"def generated_{i}(x):\n    return x * {i} + {i * i}\n" * 5,
            "generation_id": f"cmpl-{i:024x}",
            "model": "lm-tiny",
        }
        for i in range(30)
    ]
    (synthetic / "generations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    for seed in range(3):
        corpus = assemble(
            _spec(root, synthetic=str(synthetic), seed=seed, val_fraction=0.4), lambda _: None
        )
        rows = [r for r in corpus.table.to_pylist() if r["origin"] == "synthetic"]
        assert len(rows) == 30 and {r["generation_model"] for r in rows} == {"lm-tiny"}
        assert rows[3]["generation_id"] == f"cmpl-{3:024x}"
        assert rows[3]["path"] == "synthetic/generations.jsonl" and rows[3]["record"] == 3
        assert {r["split"] for r in rows} == {"train"}  # real documents only are held out
        assert "val" in {r["split"] for r in corpus.table.to_pylist() if r["origin"] == "real"}
    allowed = assemble(
        _spec(root, synthetic=str(synthetic), hold_out_synthetic=True, val_fraction=0.45),
        lambda _: None,
    )
    assert "val" in {r["split"] for r in allowed.table.to_pylist() if r["origin"] == "synthetic"}
