"""Plain FastAPI + uvicorn baselines for bench/serve_throughput.py: what most people write first.

    PLAIN_MODE=A PLAIN_LM=runs/lm-tiny/checkpoints/latest python -m uvicorn bench.plain_server:app

- ``A``: a sync endpoint calling ``transformers`` ``generate``; FastAPI's thread pool runs
  requests concurrently, each with torch's default threads.
- ``B``: an async endpoint handing each generation to one dedicated thread: one at a time.

``PLAIN_GAN`` adds ``/v1/images/generations`` (16 images a request in the bench), run the same
way as the mode says. ``PLAIN_DEVICE=cuda`` runs both on the GPU in bf16, as genai's
replicas do with ``num_gpus`` (bench/gpu_train.py). No genai serving code: the model is read
with ``transformers`` (LM) or built from the checkpoint's safetensors (GAN), and answers are
OpenAI-shaped.
"""

from __future__ import annotations

import asyncio
import base64
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch
from fastapi import FastAPI
from transformers import AutoModelForCausalLM, AutoTokenizer

MODE = os.environ.get("PLAIN_MODE", "A")
DEVICE = os.environ.get("PLAIN_DEVICE", "cpu")
DTYPE = torch.bfloat16 if DEVICE == "cuda" else torch.float32
app = FastAPI()
_one = ThreadPoolExecutor(max_workers=1)

if os.environ.get("PLAIN_LM"):
    _lm = AutoModelForCausalLM.from_pretrained(os.environ["PLAIN_LM"], use_safetensors=True)
    _lm = _lm.to(DEVICE, DTYPE).eval()
    _tok = AutoTokenizer.from_pretrained(os.environ["PLAIN_LM"])

if os.environ.get("PLAIN_GAN"):
    from genai.families.images.serving import load_image_model
    from genai.pictures import png_bytes

    _gan = load_image_model(os.environ["PLAIN_GAN"]).model.to(DEVICE, DTYPE)


def _complete(body: dict[str, Any]) -> dict[str, Any]:
    ids = _tok(body["prompt"], return_tensors="pt").input_ids.to(DEVICE)
    with torch.inference_mode():
        out = _lm.generate(
            ids,
            max_new_tokens=body.get("max_tokens", 16),
            do_sample=body.get("temperature", 1.0) > 0,
            temperature=body.get("temperature", 1.0) or None,
            top_p=body.get("top_p", 1.0),
            pad_token_id=_tok.eos_token_id,
        )
    new = out[0, ids.shape[1] :].tolist()
    return {
        "object": "text_completion",
        "choices": [{"text": _tok.decode(new), "index": 0, "finish_reason": "length"}],
        "usage": {
            "prompt_tokens": ids.shape[1],
            "completion_tokens": len(new),
            "total_tokens": ids.shape[1] + len(new),
        },
    }


def _images(body: dict[str, Any]) -> dict[str, Any]:
    n = body.get("n", 1)
    cfg = _gan.cfg
    with torch.inference_mode():
        z = torch.randn(n, cfg.latent_dim, device=DEVICE, dtype=DTYPE)
        labels = torch.randint(0, cfg.num_classes, (n,), device=DEVICE) if cfg.conditional else None
        images = ((_gan(z, labels) + 1) / 2).float().cpu()
    return {"data": [{"b64_json": base64.b64encode(png_bytes(x)).decode()} for x in images]}


if MODE == "A":

    @app.post("/v1/completions")
    def completions_a(body: dict[str, Any]) -> dict[str, Any]:
        return _complete(body)

    @app.post("/v1/images/generations")
    def images_a(body: dict[str, Any]) -> dict[str, Any]:
        return _images(body)

else:

    @app.post("/v1/completions")
    async def completions_b(body: dict[str, Any]) -> dict[str, Any]:
        return await asyncio.get_running_loop().run_in_executor(_one, _complete, body)

    @app.post("/v1/images/generations")
    async def images_b(body: dict[str, Any]) -> dict[str, Any]:
        return await asyncio.get_running_loop().run_in_executor(_one, _images, body)


@app.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}
