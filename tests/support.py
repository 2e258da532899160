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


CHATML = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + "
    "'<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def tiny_llama_dir(directory: Path, vocab_size: int = 384, seed: int = 0) -> Path:
    """A tiny random Llama as Hugging Face saves one (safetensors, config, a byte-level BPE
    tokenizer with a ChatML chat template): what `genai import` takes besides GGUF."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from genai.data.tokens import train_tokenizer

    tokenizer = train_tokenizer([Path(__file__).read_text()] * 2, vocab_size)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tokenizer.eos_token = "<|im_end|>"
    tokenizer.chat_template = CHATML
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.eos_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def chat_jsonl(path: Path, n: int = 40) -> Path:
    """Conversations with a learnable answer: the sum of two small numbers, in words."""
    import json

    words = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    with open(path, "w") as f:
        for i in range(n):
            a, b = i % 5, (i // 5) % 5
            messages = [
                {"role": "system", "content": "Answer in one word."},
                {"role": "user", "content": f"What is {a} plus {b}?"},
                {"role": "assistant", "content": words[a + b]},
            ]
            f.write(json.dumps({"messages": messages}) + "\n")
    return path


def audio_tools_missing() -> str | None:
    """Why the audio tests cannot run here (Debian's espeak-ng, sox, fluidsynth and its
    soundfont), or None. Under GENAI_REQUIRE_AUDIO (CI) nothing is skipped: a missing tool
    fails the tests that need it."""
    import shutil as _shutil

    if os.environ.get("GENAI_REQUIRE_AUDIO"):
        return None
    missing = [p for p in ("espeak-ng", "sox", "fluidsynth") if _shutil.which(p) is None]
    if not Path("/usr/share/sounds/sf2/FluidR3_GM.sf2").is_file():
        missing.append("fluid-soundfont-gm")
    return f"needs Debian's {', '.join(missing)} (.ci/run installs them)" if missing else None
