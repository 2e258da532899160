"""Corpus reading (text, JSONL, Parquet), tokenizer training, cached shards, batches."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from genai.config import SpecError
from genai.data.batches import BlockSampler, eval_batches
from genai.data.corpus import iter_documents, resolve_files
from genai.data.tokens import prepare
from genai.families.lm import DataSpec
from tests.support import token_corpus


def _spec(**kw) -> DataSpec:
    return DataSpec(**{"tokenizer": {"vocab_size": 300}, "max_bytes": 100_000, "seq_len": 16, **kw})


def test_text_jsonl_parquet_give_the_same_documents(tmp_path, corpus_dir):
    docs = [p.read_text() for p in sorted(corpus_dir.glob("json_*.py"))]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    pq.write_table(pa.table({"body": docs}), tmp_path / "d.parquet")
    from_text = list(
        iter_documents(resolve_files(_spec(source=str(corpus_dir), include=["json_*.py"])), _spec())
    )
    from_jsonl = list(iter_documents([tmp_path / "d.jsonl"], _spec()))
    from_pq = list(iter_documents([tmp_path / "d.parquet"], _spec(text_field="body")))
    assert from_text == from_jsonl == from_pq == docs


def test_bad_inputs_name_the_field(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{"txt": "no"}\n')
    with pytest.raises(SpecError, match=r"bad.jsonl:2: no string field data.text_field='text'"):
        list(iter_documents([tmp_path / "bad.jsonl"], _spec()))
    pq.write_table(pa.table({"x": ["a"]}), tmp_path / "p.parquet")
    with pytest.raises(SpecError, match="no column data.text_field='text'"):
        list(iter_documents([tmp_path / "p.parquet"], _spec()))
    with pytest.raises(SpecError, match="matched no files"):
        resolve_files(_spec(source=str(tmp_path / "nothing-*.txt")))


def test_stdlib_default_corpus_exists_offline():
    files = resolve_files(DataSpec())
    assert len(files) > 100 and all(f.suffix == ".py" for f in files)
    assert not any("test" in f.parts for f in files)


def test_prepare_trains_tokenizer_caches_and_round_trips(tmp_path, corpus_dir):
    spec = _spec(source=str(corpus_dir), cache_dir=str(tmp_path / "cache"))
    logs: list[str] = []
    data = prepare(spec, log=logs.append)
    assert any("tokenized" in m for m in logs)
    train, val = data.load("train"), data.load("val")
    assert len(train) == data.train_tokens > 10 * len(val) > 0
    assert train.max() < data.vocab_size <= 300
    tok = data.tokenizer()
    text = "def add(a, b):\n    return a + b\n"
    assert tok.decode(tok(text)["input_ids"]) == text  # byte-level BPE is lossless
    # same spec + same files: reused, not rebuilt
    logs.clear()
    again = prepare(spec, log=logs.append)
    assert again.dir == data.dir and any("reusing" in m for m in logs)
    # a different tokenizer size is a different cache entry
    assert (
        prepare(
            _spec(
                source=str(corpus_dir),
                cache_dir=str(tmp_path / "cache"),
                tokenizer={"vocab_size": 320},
            )
        ).dir
        != data.dir
    )


def test_a_pre_tokenized_corpus_is_read_in_place_with_whole_files_held_out(tmp_path):
    files, tok = token_corpus(tmp_path, [5000, 5000, 1000, 5000, 5000])
    spec = _spec(source=str(files), format="tokens", tokenizer={"path": str(tok)})
    spec = spec.model_copy(update={"cache_dir": str(tmp_path / "cache")})
    logs: list[str] = []
    data = prepare(spec, log=logs.append)
    assert any("pre-tokenized" in m for m in logs)
    # 5% of 21,000 tokens: only the 1,000-token file fits the held-out budget
    held_out = pq.read_table(files / "part-00002.parquet").column("tokens").to_numpy()
    assert (data.load("val") == held_out).all()
    shards = data.train_shards()
    assert [p for p, _ in shards] == [files / f"part-0000{i}.parquet" for i in (0, 1, 3, 4)]
    assert [n for _, n in shards] == [5000] * 4 and data.train_tokens == 20_000
    assert data.vocab_size == 300 and data.val_bytes > 0
    assert data.load("train").dtype == np.int32
    # its manifest: one row per file, with the split each went to, and a version id
    from genai.data import manifest

    rows = pq.read_table(data.dir / manifest.MANIFEST).to_pylist()
    assert [(r["path"], r["split"]) for r in rows] == [
        (f"part-0000{i}.parquet", "val" if i == 2 else "train") for i in range(5)
    ]
    assert rows[0]["size"] == (files / "part-00000.parquet").stat().st_size
    assert data.dataset == manifest.version_id(pq.read_table(data.dir / manifest.MANIFEST))


def test_bad_pre_tokenized_input_names_the_field(tmp_path):
    files, tok = token_corpus(tmp_path, [2000, 2000])
    kw = {"source": str(files), "format": "tokens", "cache_dir": str(tmp_path / "c")}
    with pytest.raises(SpecError, match=r"data\.tokenizer\.path"):
        prepare(_spec(**kw))
    kw["tokenizer"] = {"path": str(tok)}
    big = np.full(100, 300, np.int32)  # one past the vocabulary
    pq.write_table(pa.table({"tokens": big}), files / "part-00009.parquet")
    with pytest.raises(SpecError, match="outside the tokenizer's vocabulary of 300"):
        prepare(_spec(**kw))
    pq.write_table(pa.table({"ids": big}), files / "part-00009.parquet")
    with pytest.raises(SpecError, match="no column 'tokens'"):
        prepare(_spec(**kw))


def test_sampler_is_a_function_of_step_and_ranks_are_disjoint():
    tokens = np.arange(64 * 8, dtype=np.int32)  # 64 blocks of 8; block i starts at 8*i
    a = [BlockSampler(tokens, 8, 4, 2, rank, 2, seed=1) for rank in range(2)]
    b = BlockSampler(tokens, 8, 4, 2, 0, 2, seed=1)
    assert a[0].global_batch == 16
    # same step -> same batch (exact resume); different ranks/micro-steps -> different blocks
    assert np.array_equal(a[0].batch(5, 1), b.batch(5, 1))
    seen = [
        tuple(a[r].batch(s, m)[:, 0].tolist()) for s in range(4) for m in range(2) for r in range(2)
    ]
    blocks = [x // 8 for batch in seen for x in batch]
    assert len(blocks) == 64 and len(set(blocks)) == 64  # 4 steps x 16 = one epoch, each block once
    assert not np.array_equal(a[0].batch(4, 0), a[0].batch(0, 0))  # the next epoch is reshuffled


def test_eval_batches_are_equal_across_ranks():
    tokens = np.arange(7 * 8, dtype=np.int32)  # 7 blocks: ranks must still get the same count
    r0, r1 = (eval_batches(tokens, 8, 2, 4, r, 2) for r in range(2))
    assert [len(b) for b in r0] == [len(b) for b in r1] == [2, 1]
    with pytest.raises(ValueError, match="raise data.val_fraction"):
        eval_batches(tokens[:8], 8, 2, 4, 0, 2)
