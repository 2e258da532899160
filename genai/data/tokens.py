"""Tokenizer training and token shards in Parquet, cached by content.

The driver prepares data once per spec: train (or load) a tokenizer, tokenize
the corpus, split off validation documents, and write Parquet files of token ids:
the training tokens in shards of ``data.shard_tokens`` (streamed by Ray Data when
``data.streaming`` is on), the held-out tokens in one file. A later run of the
same spec over the same files reuses them.

Pre-tokenized corpora (``data.format: tokens``: Parquet files of token ids, made by the
tokenizer at ``data.tokenizer.path``) are not copied: the cache records their paths and
token counts, from the Parquet footers, so a corpus far bigger than the driver's memory
is prepared in seconds, and streamed from where it lies.

The held-out split is made of whole documents (a source file, a JSONL record):
no piece of a held-out file is ever trained on. Beside it, the cache records its
size in UTF-8 bytes and what ``xz -9e`` makes of it, so a model's bits per byte
can be read against a general-purpose compressor on the very same text.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import lzma
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from genai.data import manifest
from genai.data.corpus import resolve_files
from genai.data.dataset import assemble, register, whole_items_manifest
from genai.families.lm import DataSpec
from genai.specbase import SpecError

EOS = "<|endoftext|>"
FORMAT_VERSION = 4
_XZ_SAMPLE_TOKENS = 1 << 20  # xz -9e of more held-out text would take minutes
_TOKENIZER_FILES = {"vocab.json", "merges.txt", "special_tokens_map.json", "added_tokens.json"}


class CacheMeta(BaseModel):
    """``meta.json`` of a token cache directory: what the workers and the report read."""

    format: int = FORMAT_VERSION
    train_tokens: int
    val_tokens: int
    train_shards: list[tuple[str, int]]
    """training shards (file name under ``train/``, or an absolute path) and token counts"""
    vocab_size: int
    eos_id: int
    documents: dict[str, int]
    val_bytes: int
    xz_bpb: float
    spec: dict[str, Any]
    dataset: str | None = None
    """the dataset version (genai/data/manifest.py); its manifest is ``manifest.parquet``"""

    def write(self, directory: Path) -> None:
        (directory / "meta.json").write_text(self.model_dump_json(indent=2))

    @classmethod
    def read(cls, directory: Path) -> CacheMeta:
        return cls.model_validate_json((directory / "meta.json").read_text())


@dataclass(frozen=True)
class TokenData:
    """A prepared dataset: where it lives and what it holds."""

    dir: Path
    tokenizer_dir: Path
    train_tokens: int
    val_tokens: int
    vocab_size: int
    eos_id: int
    val_bytes: int
    xz_bpb: float
    dataset: str | None = None  # the dataset version; manifest.parquet beside meta.json

    def load(self, split: str) -> np.ndarray:
        """All of a split's tokens in memory."""
        if split == "train":
            parts = [_read_tokens(path) for path, _ in self.train_shards()]
            return np.concatenate(parts) if parts else np.zeros(0, np.int32)
        return _read_tokens(self.dir / f"{split}.parquet")

    def train_shards(self) -> list[tuple[Path, int]]:
        """The training shards in order, with their token counts (a pre-tokenized corpus's
        shards are its own files: absolute paths)."""
        return [(self.dir / "train" / name, n) for name, n in CacheMeta.read(self.dir).train_shards]

    def tokenizer(self) -> PreTrainedTokenizerFast:
        return AutoTokenizer.from_pretrained(self.tokenizer_dir)


def _cache_key(spec: DataSpec, files: list[Path]) -> str:
    h = hashlib.sha256()
    relevant = spec.model_dump(mode="json", exclude={"cache_dir", "seq_len", "streaming"})
    h.update(json.dumps([FORMAT_VERSION, relevant], sort_keys=True).encode())
    for p in files:
        st = p.stat()
        h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    if spec.tokenizer.path:
        # the tokenizer's own files only: the directory may be a whole model checkpoint
        for p in sorted(Path(spec.tokenizer.path).glob("*")):
            if p.is_file() and (p.name.startswith("tokenizer") or p.name in _TOKENIZER_FILES):
                h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()[:16]


def train_tokenizer(docs: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE (GPT-2 style): every byte is representable, so nothing is <unk>."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(docs, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=EOS, bos_token=EOS, unk_token=EOS, pad_token=EOS
    )


def prepare(spec: DataSpec, log=print) -> TokenData:
    """Tokenize the corpus into ``<cache_dir>/text-<key>/``, or reuse a finished one."""
    files = resolve_files(spec)
    out = Path(spec.cache_dir).absolute() / f"text-{_cache_key(spec, files)}"
    if (out / "meta.json").is_file():
        log(f"data: reusing tokenized corpus {out}")
        return _token_data(out)

    if spec.format == "tokens":
        return _import_tokens(spec, files, out, log)
    return _tokenize_text(spec, files, out, log)


def _tokenize_text(spec: DataSpec, files: list[Path], out: Path, log) -> TokenData:
    """Hold out whole documents, train (or load) the tokenizer, write the shards."""
    t0 = time.perf_counter()
    corpus = assemble(spec, log)
    train_docs, val_docs = corpus.documents("train"), corpus.documents("val")
    log(
        f"data: {len(files)} files, {len(corpus.texts)} documents, "
        f"{sum(map(len, corpus.texts)) / 1e6:.1f}M chars; {len(train_docs)} train, "
        f"{len(val_docs)} held out (whole dedup clusters); dataset {corpus.version}"
    )

    if spec.tokenizer.path:
        tokenizer = AutoTokenizer.from_pretrained(spec.tokenizer.path, local_files_only=True)
    else:
        tokenizer = train_tokenizer(train_docs, spec.tokenizer.vocab_size)
    eos_id = tokenizer.eos_token_id
    if eos_id is None:
        raise ValueError(
            f"tokenizer at data.tokenizer.path={spec.tokenizer.path!r} has no eos token"
        )

    with _staged(out) as tmp:
        counts, shards = {}, []
        for split, split_docs in (("train", train_docs), ("val", val_docs)):
            ids = _encode(tokenizer, split_docs, eos_id)
            counts[split] = len(ids)
            if split == "val":
                pq.write_table(pa.table({"tokens": ids}), tmp / "val.parquet")
                continue
            (tmp / "train").mkdir()
            for i, start in enumerate(range(0, len(ids), spec.shard_tokens)):
                name = f"part-{i:05d}.parquet"
                piece = ids[start : start + spec.shard_tokens]
                pq.write_table(pa.table({"tokens": piece}), tmp / "train" / name)
                shards.append([name, len(piece)])
        tokenizer.save_pretrained(tmp / "tokenizer")
        manifest.write(corpus.table, tmp / manifest.MANIFEST)
        register(corpus.table, spec, corpus.report)
        val_text = "".join(val_docs).encode("utf-8", "replace")
        xz = lzma.compress(val_text, preset=9 | lzma.PRESET_EXTREME)
        CacheMeta(
            train_tokens=counts["train"],
            val_tokens=counts["val"],
            train_shards=shards,
            vocab_size=len(tokenizer),
            eos_id=eos_id,
            documents={"train": len(train_docs), "val": len(val_docs)},
            val_bytes=len(val_text),
            xz_bpb=8 * len(xz) / max(1, len(val_text)),
            spec=spec.model_dump(mode="json"),
            dataset=corpus.version,
        ).write(tmp)
    log(
        f"data: tokenized {counts['train']:,} train + {counts['val']:,} val tokens "
        f"(vocab {len(tokenizer)}) in {time.perf_counter() - t0:.1f}s -> {out}"
    )
    return _token_data(out)


def hold_out(sizes: list[int], fraction: float, seed: int) -> tuple[np.ndarray, set[int]]:
    """A seeded order of the items, and the whole items held out from it: taken in that
    order until ``fraction`` of the total size, an item that would overshoot the rest of
    the budget passed over (one big item cannot swallow it); if none fits, the smallest."""
    order = np.random.default_rng(seed).permutation(len(sizes))
    budget, held = fraction * sum(sizes), set()
    for i in order:
        if budget <= 0:
            break
        if sizes[i] <= budget:
            held.add(int(i))
            budget -= sizes[i]
    if not held:
        held.add(int(np.argmin(sizes)))
    return order, held


@contextlib.contextmanager
def _staged(out: Path) -> Iterator[Path]:
    """A temporary sibling of ``out`` to write into, renamed to ``out`` when the block
    ends: a crash never leaves a cache that looks complete."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".tmp-", dir=out.parent))
    try:
        yield tmp
        try:
            os.rename(tmp, out)
        except OSError:
            if not (
                out / "meta.json"
            ).is_file():  # lost a race to another writer: theirs is as good
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _import_tokens(spec: DataSpec, files: list[Path], out: Path, log) -> TokenData:
    """Record a pre-tokenized corpus: its files are the training shards, in place; whole
    files are held out (as documents are for text)."""
    if not spec.tokenizer.path:
        raise SpecError(
            "data.tokenizer.path: pre-tokenized data (data.format: tokens) needs the local "
            "tokenizer that made it"
        )
    tokenizer = AutoTokenizer.from_pretrained(spec.tokenizer.path, local_files_only=True)
    if tokenizer.eos_token_id is None:
        raise SpecError(
            f"data.tokenizer.path={spec.tokenizer.path!r}: the tokenizer has no eos token"
        )
    counts = [_count_tokens(p, len(tokenizer)) for p in files]
    if len(files) < 2:
        raise SpecError(
            f"data.source {spec.source!r} holds {len(files)} token file(s); the held-out split "
            "is made of whole files, so it needs at least two"
        )
    _, val_idx = hold_out(counts, spec.val_fraction, spec.seed)
    # whole files are the items: listed with their hashes (token ids are not deduplicated)
    items = [(p, 0, p.stat().st_size, _file_sha256(p)) for p in files]
    table = whole_items_manifest(spec, files, items, val_idx)
    val = np.concatenate([_read_tokens(files[i]) for i in sorted(val_idx)])
    shards = [[str(files[i].absolute()), counts[i]] for i in range(len(files)) if i not in val_idx]
    token_bytes = token_byte_lengths(tokenizer)
    # the compressor's bits per byte on (a prefix of) the held-out text, decoded
    sample = tokenizer.decode(val[:_XZ_SAMPLE_TOKENS].tolist()).encode("utf-8", "replace")
    xz = lzma.compress(sample, preset=9 | lzma.PRESET_EXTREME)
    with _staged(out) as tmp:
        pq.write_table(pa.table({"tokens": val}), tmp / "val.parquet")
        tokenizer.save_pretrained(tmp / "tokenizer")
        manifest.write(table, tmp / manifest.MANIFEST)
        meta = CacheMeta(
            train_tokens=sum(n for _, n in shards),
            val_tokens=len(val),
            train_shards=shards,
            vocab_size=len(tokenizer),
            eos_id=tokenizer.eos_token_id,
            documents={"train": len(shards), "val": len(val_idx)},
            val_bytes=int(token_bytes[val].sum()),
            xz_bpb=8 * len(xz) / max(1, len(sample)),
            spec=spec.model_dump(mode="json"),
            dataset=register(table, spec),
        )
        meta.write(tmp)
    log(
        f"data: {len(files)} pre-tokenized files, {meta.train_tokens:,} train tokens "
        f"(streamed in place) + {len(val):,} held-out tokens from {len(val_idx)} file(s) "
        f"-> {out}"
    )
    return _token_data(out)


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _count_tokens(path: Path, vocab_size: int) -> int:
    """A token file's token count, from its footer; its ids checked against the vocabulary
    by the footer's statistics (where the writer kept them) rather than by reading it."""
    try:
        meta = pq.ParquetFile(path).metadata
    except Exception as e:  # pyarrow raises several kinds for a bad file
        raise SpecError(f"{path}: not a Parquet file (data.format=tokens): {e}") from None
    names = meta.schema.to_arrow_schema().names
    if "tokens" not in names:
        raise SpecError(f"{path}: no column 'tokens' (data.format=tokens; columns: {names})")
    col = names.index("tokens")
    if not pa.types.is_integer(meta.schema.to_arrow_schema().field(col).type):
        raise SpecError(f"{path}: column 'tokens' must hold integer token ids (data.format=tokens)")
    for g in range(meta.num_row_groups):
        stats = meta.row_group(g).column(col).statistics
        if stats is not None and stats.has_min_max and not 0 <= stats.min <= stats.max < vocab_size:
            raise SpecError(
                f"{path}: token ids {stats.min}..{stats.max} outside the tokenizer's "
                f"vocabulary of {vocab_size} (data.tokenizer.path)"
            )
    return meta.num_rows


def _encode(tokenizer: PreTrainedTokenizerFast, docs: list[str], eos_id: int) -> np.ndarray:
    encoded = tokenizer.backend_tokenizer.encode_batch(docs, add_special_tokens=False)
    pieces = []
    for enc in encoded:
        pieces.append(np.asarray(enc.ids, dtype=np.int32))
        pieces.append(np.asarray([eos_id], dtype=np.int32))  # documents are separated by EOS
    return np.concatenate(pieces) if pieces else np.zeros(0, np.int32)


def _read_tokens(path: Path) -> np.ndarray:
    return (
        pq.read_table(path, columns=["tokens"])
        .column("tokens")
        .to_numpy()
        .astype(np.int32, copy=False)
    )


def _token_data(out: Path) -> TokenData:
    counts = {f.name for f in fields(TokenData)} - {"dir", "tokenizer_dir"}
    meta = CacheMeta.read(out).model_dump(include=counts)
    return TokenData(dir=out, tokenizer_dir=out / "tokenizer", **meta)


def token_byte_lengths(tokenizer: PreTrainedTokenizerFast) -> np.ndarray:
    """UTF-8 bytes each token id stands for (special tokens: 0), for bits per byte.

    Exact for byte-level BPE (GPT-2's and ours: one alphabet character per byte);
    for other tokenizers, the bytes of each token decoded on its own."""
    size = len(tokenizer)
    special = set(tokenizer.all_special_ids)
    out = np.zeros(size, dtype=np.int64)
    byte_level = isinstance(tokenizer.backend_tokenizer.decoder, decoders.ByteLevel)
    pieces = tokenizer.convert_ids_to_tokens(list(range(size)))
    for i, piece in enumerate(pieces):
        if i in special or piece is None:
            continue
        out[i] = len(piece) if byte_level else len(tokenizer.decode([i]).encode("utf-8"))
    return out
