"""Helpers shared by the end-to-end tests (plain functions; fixtures live in conftest.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from genai import checkpoint as ckpt


def train_command(spec_path: Path) -> list[str]:
    return [sys.executable, "-m", "genai.cli", "train", str(spec_path)]


def start_and_wait_for_checkpoint(spec_path: Path, root: Path, **popen) -> subprocess.Popen:
    """Start `genai train SPEC` in its own process group; return once a checkpoint is committed."""
    proc = subprocess.Popen(train_command(spec_path), start_new_session=True, **popen)
    deadline = time.time() + 240
    while ckpt.find_latest(root) is None and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    if ckpt.find_latest(root) is None or proc.poll() is not None:
        os.killpg(proc.pid, signal.SIGKILL)
        raise AssertionError("no checkpoint appeared while the run was alive")
    time.sleep(1.0)
    return proc


def kill_after_first_checkpoint(spec_path: Path, root: Path) -> tuple[list[str], int]:
    """SIGKILL a `genai train` run's whole process group after its first checkpoint;
    return the command and the step of the checkpoint it left."""
    proc = start_and_wait_for_checkpoint(
        spec_path, root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        assert proc.poll() is None, "the run ended before it could be killed"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    time.sleep(3)  # let Ray's fate-shared workers exit
    return train_command(spec_path), ckpt.read_meta(ckpt.find_latest(root)).step


def resume(cmd: list[str], max_steps: int) -> subprocess.CompletedProcess:
    r = subprocess.run(
        [*cmd, "--resume", "--set", f"train.max_steps={max_steps}"],
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def assert_self_contained(directory: Path) -> None:
    """No value in meta.json (outside the recorded spec) names a file outside the checkpoint."""
    meta = ckpt.read_meta(directory).model_dump(mode="json")
    meta.pop("spec")
    if meta.get("lineage"):
        meta["lineage"].pop("source")  # where it was copied from: provenance, not a dependency
        meta["lineage"].pop("base_spec")

    def strings(node):
        if isinstance(node, dict):
            for v in node.values():
                yield from strings(v)
        elif isinstance(node, list):
            for v in node:
                yield from strings(v)
        elif isinstance(node, str):
            yield node

    inside = Path(directory).resolve()
    for s in strings(meta):
        if "/" in s and Path(s).exists():
            assert inside in Path(s).resolve().parents, f"meta.json points outside: {s}"
    for key in ("classifier",):
        if key in meta["export"]:
            assert (inside / meta["export"][key]).is_file()


def token_corpus(
    directory: Path, sizes: list[int], vocab_size: int = 300, seed: int = 0
) -> tuple[Path, Path]:
    """A pre-tokenized corpus (``data.format: tokens``): a byte-level BPE tokenizer of
    ``vocab_size`` and one Parquet file of random token ids per entry of ``sizes``.
    Returns (the files' directory, the tokenizer's directory)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from genai.data.tokens import train_tokenizer

    tok_dir, files = directory / "tokenizer", directory / "tokens"
    files.mkdir(parents=True)
    text = Path(__file__).read_text()
    train_tokenizer([text] * 4, vocab_size).save_pretrained(tok_dir)
    rng = np.random.default_rng(seed)
    for i, n in enumerate(sizes):
        ids = rng.integers(0, vocab_size, n, dtype=np.int32)
        # plain int32 (no dictionary, no compression): as big on disk as in memory
        table = pa.table({"tokens": ids})
        pq.write_table(
            table, files / f"part-{i:05d}.parquet", use_dictionary=False, compression="none"
        )
    return files, tok_dir
