"""The checkpoint contract, shared by training, tuning and serving.

``<checkpoint.dir>/step-000200/`` holds:

- ``deepspeed/``: every rank's DeepSpeed shards (exact resume: weights, optimizer,
  LR schedule, step);
- ``model.safetensors`` + ``config.json`` (+ ``generation_config.json``):
  consolidated weights that ``transformers.AutoModelForCausalLM.from_pretrained`` loads;
  or, for a LoRA run, ``adapter_model.safetensors`` + ``adapter_config.json`` instead,
  which ``peft.PeftModel.from_pretrained`` loads over the base that ``meta.json``'s
  ``export.base`` names by path and sha256;
- the tokenizer files (``tokenizer.json`` ...);
- ``meta.json`` (:class:`Meta`): family, name, step, metrics, spec, spec hash,
  DeepSpeed config, library versions, the family's export record and, for a
  checkpoint promoted from a sweep, its lineage. Written last.
- whatever else the family needs at inference or for evaluation (a GAN's
  discriminator, the quality classifier), always *inside* the directory:
  a checkpoint is self-contained and ``meta.json`` names files relative to it.

A checkpoint is written into ``.step-000200.tmp-*`` and renamed into place only
when complete, so a crash mid-write never leaves a directory that looks
complete; ``latest`` is a symlink replaced atomically. Serving reads only
safetensors, JSON and tokenizer files, never a pickle.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

META = "meta.json"
WEIGHTS = "model.safetensors"
ADAPTER = "adapter_model.safetensors"
DATASET = "dataset.parquet"  # the manifest of the documents it trained on and held out
DS_DIR = "deepspeed"
CONTRACT = "genai-checkpoint/2"
_STEP_RE = re.compile(r"^step-(\d{6,})$")


class CheckpointError(RuntimeError):
    pass


class Lineage(BaseModel):
    """Where a promoted checkpoint came from: the sweep and trial that made it."""

    model_config = ConfigDict(extra="forbid")

    sweep: str
    trial_id: str
    config: dict[str, Any] = Field(description="the trial's searched values (dotted keys)")
    metric: str
    mode: Literal["min", "max"]
    value: float = Field(description="the trial's best value of the metric")
    base_spec: str = Field(description="the job spec the sweep started from")
    base_spec_hash: str
    source: str = Field(description="the trial checkpoint this was copied from")
    promoted: str = Field(description="when (ISO 8601)")


class ImportLineage(BaseModel):
    """Where an imported checkpoint came from (``genai import``): the file, its hash and what
    was done to it."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["import"] = "import"
    source: str = Field(description="the GGUF file or Hugging Face directory imported")
    sha256: str = Field(description="of the GGUF file, or of the directory's weight files")
    format: Literal["gguf", "hf"]
    quantization: str | None = Field(None, description="the GGUF file type, e.g. Q4_1")
    dtype: str = Field(description="what the weights were stored as here")
    note: str = ""
    imported: str = Field(description="when (ISO 8601)")


class Meta(BaseModel):
    """``meta.json``: what a checkpoint is, without reading its weights."""

    model_config = ConfigDict(extra="forbid")

    format: str = CONTRACT
    family: str
    name: str
    step: int
    metrics: dict[str, float] = Field(default_factory=dict)
    history: list[dict[str, float]] = Field(
        default_factory=list, description="every evaluation, oldest first"
    )
    curves: list[dict[str, float]] = Field(default_factory=list, description="every logged step")
    pictures: list[str] = Field(default_factory=list, description="PNG files in the directory")
    spec: dict[str, Any] = Field(description="the validated job spec")
    spec_hash: str
    deepspeed_config: dict[str, Any] = Field(default_factory=dict, description="per engine")
    world_size: int = 1
    node_ids: list[str] = Field(
        default_factory=list, description="the Ray node of each rank that wrote it, by rank"
    )
    n_params: int = 0
    versions: dict[str, str] = Field(default_factory=dict)
    created: str = ""
    export: dict[str, Any] = Field(
        default_factory=dict,
        description="the family's own record: model_config, tensor counts, class names, files",
    )
    lineage: Lineage | ImportLineage | None = None
    run_id: str = Field(
        "", description="the training run that wrote it (one `genai train` and its `--resume`s)"
    )

    def file(self, directory: Path, key: str) -> Path | None:
        """A file the export record names (relative to the checkpoint), or None."""
        name = self.export.get(key)
        if name is None:
            return None
        path = (Path(directory) / name).resolve()
        if Path(directory).resolve() not in path.parents:
            raise CheckpointError(f"{directory}/{META}: export.{key} points outside the checkpoint")
        return path


def step_name(step: int) -> str:
    return f"step-{step:06d}"


def staging_dir(root: Path, step: int, run_id: str) -> Path:
    """Where all ranks write before the commit; unique per run so two runs never mix."""
    return root / f".{step_name(step)}.tmp-{run_id}"


def is_complete(path: Path) -> bool:
    return (
        path.is_dir()
        and (path / META).is_file()
        and ((path / WEIGHTS).is_file() or (path / ADAPTER).is_file())
    )


def is_adapter(path: Path) -> bool:
    """A LoRA checkpoint: an adapter over a base named in ``meta.json`` (no full weights)."""
    return (Path(path) / ADAPTER).is_file() and not (Path(path) / WEIGHTS).is_file()


def weights_sha256(directory: Path) -> str:
    """The identity of a model's weights: the sha256 that ``meta.json`` recorded at export,
    else that of its ``*.safetensors`` files in name order (an adapter's file excluded).
    An adapter names its base by this, and serving checks it."""
    directory = Path(directory)
    if (directory / META).is_file():
        with contextlib.suppress(CheckpointError):
            recorded = read_meta(directory).export.get("weights_sha256")
            if recorded:
                return str(recorded)
    files = sorted(p for p in directory.glob("*.safetensors") if p.name != ADAPTER)
    if not files:
        raise CheckpointError(f"{directory}: no *.safetensors weights")
    return file_sha256(*files)


def file_sha256(*paths: Path) -> str:
    h = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 22):
                h.update(chunk)
    return h.hexdigest()


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
        raise CheckpointError(
            f"{path} is not a complete genai checkpoint (no {META} + {WEIGHTS} or {ADAPTER})"
        )
    return p.resolve()


def write_meta(directory: Path, meta: Meta) -> None:
    tmp = Path(directory) / (META + ".tmp")
    tmp.write_text(json.dumps(meta.model_dump(mode="json"), indent=2))
    _fsync(tmp)
    os.replace(tmp, Path(directory) / META)


def read_meta(directory: str | Path) -> Meta:
    try:
        raw = json.loads((Path(directory) / META).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{directory}: cannot read {META}: {exc}") from None
    if not isinstance(raw, dict) or raw.get("format") != CONTRACT:
        found = raw.get("format") if isinstance(raw, dict) else None
        raise CheckpointError(
            f"{directory}: checkpoint format {found!r}, this genai reads {CONTRACT!r}"
        )
    return Meta.model_validate(raw)


def open_for_inference(path: str | Path, family: str | tuple[str, ...]) -> tuple[Path, Meta]:
    """The checkpoint dir and its meta, checked to hold the given family (what serving calls)."""
    directory = resolve(path)
    meta = read_meta(directory)
    families = (family,) if isinstance(family, str) else family
    if meta.family not in families:
        raise CheckpointError(
            f"{directory} holds a {meta.family!r} model, not {' or '.join(families)}"
        )
    return directory, meta


def copy_checkpoint(src: Path, dest: Path, lineage: Lineage | None = None) -> Path:
    """Copy a committed checkpoint to ``dest`` (replacing it atomically), optionally
    recording where it came from. A copy, not a link: the source may be deleted."""
    src = resolve(src)
    dest = Path(dest).absolute()
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = dest.parent / f".{dest.name}.tmp-{os.getpid()}-{time.time_ns()}"
    shutil.copytree(src, staging, symlinks=False)
    try:
        meta = read_meta(staging)
        if lineage is not None:
            write_meta(staging, meta.model_copy(update={"lineage": lineage}))
        install(staging, dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest


def install(staging: Path, dest: Path) -> None:
    """Move a finished ``staging`` dir to ``dest`` (a sibling) once its files are on disk,
    replacing what is there by a swap: ``dest`` is never half-written or half-replaced."""
    for f in staging.rglob("*"):
        if f.is_file():
            _fsync(f)
    if dest.exists():
        trash = dest.parent / f".trash-{dest.name}-{time.time_ns()}"
        os.rename(dest, trash)
        os.rename(staging, dest)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.rename(staging, dest)


def commit(staging: Path, root: Path, step: int, keep: int) -> Path:
    """Rename a finished staging dir into place, point ``latest`` at it, prune old ones."""
    final = root / step_name(step)
    # the same step written again (a resumed run re-reaching it) is swapped, never half-replaced
    install(staging, final)
    link_tmp = root / f".latest.tmp-{os.getpid()}"
    if link_tmp.is_symlink() or link_tmp.exists():
        link_tmp.unlink()
    os.symlink(final.name, link_tmp)
    os.replace(link_tmp, root / "latest")
    for old in list_checkpoints(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def clean_staging(root: Path, run_id: str | None = None) -> list[Path]:
    """Remove staging dirs that crashed runs left behind (only ``run_id``'s, if given);
    returns what was removed."""
    removed = []
    if root.is_dir():
        for p in root.iterdir():
            if run_id is None and p.name.startswith((".fatal-", ".started-")):
                p.unlink(missing_ok=True)  # an earlier run's recorded error (train/loop.py)
            elif p.name.startswith((".step-", ".trash-", ".reshard-")) and (
                run_id is None or p.name.endswith((f".tmp-{run_id}", f".reshard-{run_id}"))
            ):
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p)
    return removed


def latest_of_run(root: Path, run_id: str) -> Path | None:
    """The newest committed checkpoint under ``root`` written by training run ``run_id``."""
    for path in reversed(list_checkpoints(Path(root))):
        try:
            if read_meta(path).run_id == run_id:
                return path
        except CheckpointError:
            continue
    return None


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
