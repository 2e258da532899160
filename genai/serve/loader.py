"""Load a checkpoint for serving: ``meta.json`` + ``model.safetensors`` + tokenizer, nothing else.

Never imports training code and never unpickles: a ``pytorch_model.bin`` or any
other pickle dropped into a checkpoint directory is ignored. The model is
built from ``config.json`` and the weights come from safetensors only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerFast

from genai.train.checkpoint import WEIGHTS, read_meta, resolve


@dataclass
class LoadedLM:
    name: str
    path: Path
    meta: dict[str, Any]
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerFast


def load_lm(path: str | Path, dtype: torch.dtype = torch.float32) -> LoadedLM:
    directory = resolve(path)
    meta = read_meta(directory)
    if meta.get("family") != "lm":
        raise ValueError(f"{directory} holds a {meta.get('family')!r} model, not a language model")
    config = AutoConfig.from_pretrained(directory, local_files_only=True)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa", dtype=dtype)
    state = load_file(directory / WEIGHTS)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected:
        raise ValueError(f"{directory / WEIGHTS}: unexpected tensors {unexpected[:5]}")
    model.tie_weights()
    # A key may be absent from the file only if it is tied to one that was loaded (lm_head ~ wte).
    loaded_ptrs = {p.data_ptr() for n, p in model.state_dict().items() if n in state}
    untied = [k for k in missing if model.state_dict()[k].data_ptr() not in loaded_ptrs]
    if untied:
        raise ValueError(f"{directory / WEIGHTS}: missing tensors {untied[:5]}")
    model.eval()
    tokenizer = PreTrainedTokenizerFast.from_pretrained(directory, local_files_only=True)
    return LoadedLM(name=meta["name"], path=directory, meta=meta, model=model, tokenizer=tokenizer)


@dataclass
class LoadedImageModel:
    name: str
    path: Path
    meta: dict[str, Any]
    model: torch.nn.Module  # Generator (GAN) or VAE

    @property
    def family(self) -> str:
        return self.meta["family"]


def load_image_model(path: str | Path) -> LoadedImageModel:
    """A GAN's generator or a VAE, rebuilt from ``meta.json``'s model_config + safetensors."""
    from genai.models.gan import GANConfig, Generator
    from genai.models.vae import VAE, VAEConfig

    directory = resolve(path)
    meta = read_meta(directory)
    family = meta.get("family")
    if family == "gan":
        model: torch.nn.Module = Generator(GANConfig(**meta["model_config"]))
    elif family == "vae":
        model = VAE(VAEConfig(**meta["model_config"]))
    else:
        raise ValueError(f"{directory} holds a {family!r} model, not an image model")
    state = load_file(directory / WEIGHTS)
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    return LoadedImageModel(name=meta["name"], path=directory, meta=meta, model=model.eval())
