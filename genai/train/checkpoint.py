"""The checkpoint contract.

``<checkpoint.dir>/step-000200/`` holds:

- ``deepspeed/``: every rank's DeepSpeed shards (exact resume: weights, optimizer,
  LR schedule, step);
- ``model.safetensors`` + ``config.json`` (+ ``generation_config.json``):
  consolidated weights that ``transformers.AutoModelForCausalLM.from_pretrained`` loads;
- the tokenizer files (``tokenizer.json`` ...);
- ``meta.json``: family, name, step, metrics, spec, spec hash, DeepSpeed config,
  library versions. Written last.

A checkpoint is written into ``.step-000200.tmp-*`` and renamed into place only
when complete, so a crash mid-write never leaves a directory that looks
complete; ``latest`` is a symlink replaced atomically. Serving reads only
safetensors, JSON and tokenizer files, never a pickle.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

META = "meta.json"
WEIGHTS = "model.safetensors"
DS_DIR = "deepspeed"
CONTRACT = "genai-checkpoint/1"
_STEP_RE = re.compile(r"^step-(\d{6,})$")


class CheckpointError(RuntimeError):
    pass


def step_name(step: int) -> str:
    return f"step-{step:06d}"


def staging_dir(root: Path, step: int, run_id: str) -> Path:
    """Where all ranks write before the commit; unique per run so two runs never mix."""
    return root / f".{step_name(step)}.tmp-{run_id}"


def is_complete(path: Path) -> bool:
    return path.is_dir() and (path / META).is_file() and (path / WEIGHTS).is_file()


def list_checkpoints(root: Path) -> list[Path]:
    """Committed checkpoints, oldest first (staging dirs are never listed)."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if _STEP_RE.match(p.name) and is_complete(p)]
    return sorted(found, key=lambda p: int(_STEP_RE.match(p.name).group(1)))


def find_latest(root: Path) -> Path | None:
    found = list_checkpoints(Path(root))
    return found[-1] if found else None


def resolve(path: str | Path) -> Path:
    """A checkpoint dir from a user: a step dir, a ``latest`` link or a checkpoints root."""
    p = Path(path).expanduser()
    if p.is_dir() and not is_complete(p) and (latest := find_latest(p)) is not None:
        p = latest
    if not is_complete(p):
        raise CheckpointError(f"{path} is not a complete genai checkpoint (no {META} + {WEIGHTS})")
    return p.resolve()


def write_meta(directory: Path, meta: dict[str, Any]) -> None:
    tmp = directory / (META + ".tmp")
    tmp.write_text(json.dumps({"format": CONTRACT, **meta}, indent=2, default=str))
    _fsync(tmp)
    os.replace(tmp, directory / META)


def read_meta(directory: Path) -> dict[str, Any]:
    meta = json.loads((Path(directory) / META).read_text())
    if meta.get("format") != CONTRACT:
        raise CheckpointError(f"{directory}: unknown checkpoint format {meta.get('format')!r}")
    return meta


def commit(staging: Path, root: Path, step: int, keep: int) -> Path:
    """Rename a finished staging dir into place, point ``latest`` at it, prune old ones."""
    final = root / step_name(step)
    for f in staging.rglob("*"):
        if f.is_file():
            _fsync(f)
    if final.exists():
        # same step written again (a resumed run re-reaching it): swap, never half-replace
        trash = root / f".trash-{final.name}-{time.time_ns()}"
        os.rename(final, trash)
        os.rename(staging, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.rename(staging, final)
    link_tmp = root / f".latest.tmp-{os.getpid()}"
    if link_tmp.is_symlink() or link_tmp.exists():
        link_tmp.unlink()
    os.symlink(final.name, link_tmp)
    os.replace(link_tmp, root / "latest")
    for old in list_checkpoints(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def clean_staging(root: Path) -> None:
    """Remove staging dirs that crashed runs left behind."""
    if root.is_dir():
        for p in root.iterdir():
            if p.name.startswith((".step-", ".trash-")):
                shutil.rmtree(p, ignore_errors=True)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
