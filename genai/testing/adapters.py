"""LoRA adapters for tests and benchmarks: random ones, over any genai LM checkpoint."""

from __future__ import annotations

import time
from pathlib import Path

from genai import checkpoint as ckpt


def random_adapter(base: Path, out: Path, name: str, seed: int, r: int = 4) -> Path:
    """A LoRA adapter checkpoint over the genai checkpoint ``base`` with random (non-zero)
    weights, as a ``model.lora`` run exports one: what adapter serving needs, without a
    training run."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base, local_files_only=True)
    config = LoraConfig(
        r=r,
        lora_alpha=2 * r,
        target_modules="all-linear",
        init_lora_weights=False,  # random B too: the adapter changes the outputs
        base_model_name_or_path=str(base),
        task_type="CAUSAL_LM",
    )
    peft = get_peft_model(model, config)
    out.mkdir(parents=True)
    peft.save_pretrained(out)
    for f in base.iterdir():
        if f.name.startswith("tokenizer") or f.name == "chat_template.jinja":
            (out / f.name).write_bytes(f.read_bytes())
    base_meta = ckpt.read_meta(base)
    meta = base_meta.model_copy(
        update={
            "name": name,
            "step": 1,
            "lineage": None,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "export": {
                "base": {
                    "path": str(base),
                    "name": base_meta.name,
                    "sha256": ckpt.weights_sha256(base),
                },
                "adapter": {"r": r, "alpha": 2 * r},
            },
        }
    )
    ckpt.write_meta(out, meta)
    return out
