"""CUDA: every family trains at ZeRO-2 and ZeRO-3 in bf16 on a GPU, a checkpoint written
on the GPU continues on the CPU (and back), and a replica serves from the GPU.

Marked ``gpu``: skipped where torch sees no CUDA device (CI has none); run them on a GPU
machine with ``pytest -m gpu tests/test_gpu.py``.
"""

from __future__ import annotations

import math

import httpx
import pytest
import torch

from genai import checkpoint as ckpt
from genai.config import parse_job
from tests.conftest import TINY, merge
from tests.test_images_e2e import GAN, VAE, _spec

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.e2e,
    pytest.mark.full,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

ON_GPU = {"scaling": {"num_workers": 1, "use_gpu": True}, "deepspeed": {"precision": "bf16"}}


def _raw(family: str, stage: int, tmp_path, corpus_dir, cache_dir) -> dict:
    if family == "lm":
        raw = merge(TINY, {"data": {"source": str(corpus_dir), "cache_dir": str(cache_dir)}})
        raw = merge(raw, {"checkpoint": {"dir": str(tmp_path / "ckpt")}})
    else:
        raw = _spec(GAN if family == "gan" else VAE, tmp_path, cache_dir)
    return merge(raw, {**ON_GPU, "deepspeed": {**ON_GPU["deepspeed"], "zero_stage": stage}})


@pytest.mark.parametrize("stage", [2, 3])
@pytest.mark.parametrize("family", ["lm", "gan", "vae"])
def test_every_family_trains_on_cuda_in_bf16(
    ray_session, tmp_path, corpus_dir, cache_dir, family, stage
):
    from genai.train.run import train

    raw = _raw(family, stage, tmp_path, corpus_dir, cache_dir)
    final = train(parse_job(raw))
    meta = ckpt.read_meta(final)
    assert meta.step == raw["train"]["max_steps"] and meta.world_size == 1
    values = [v for c in meta.curves for v in c.values() if isinstance(v, float)]
    assert values and all(math.isfinite(v) for v in values)


def test_a_gpu_checkpoint_continues_on_the_cpu_and_back(
    ray_session, tmp_path, corpus_dir, cache_dir
):
    from genai.train.run import train

    raw = _raw("lm", 2, tmp_path, corpus_dir, cache_dir)
    on_gpu = train(parse_job(raw))
    cpu = merge(raw, {"scaling": {"use_gpu": False}, "train": {"max_steps": 9}})
    on_cpu = train(parse_job(cpu), resume=True)
    assert ckpt.read_meta(on_cpu).step == 9
    assert ckpt.read_meta(on_cpu).run_id == ckpt.read_meta(on_gpu).run_id
    back = train(parse_job(merge(raw, {"train": {"max_steps": 12}})), resume=True)
    assert ckpt.read_meta(back).step == 12
    assert ckpt.read_meta(back).run_id == ckpt.read_meta(on_gpu).run_id


def test_a_replica_serves_from_the_gpu(ray_session, serve_url, tmp_path, corpus_dir, cache_dir):
    from ray import serve

    from genai.serve.app import build_app
    from genai.serve.spec import ServeSpec
    from genai.train.run import train

    final = train(parse_job(_raw("lm", 2, tmp_path, corpus_dir, cache_dir)))
    serve.run(
        build_app(ServeSpec(num_gpus=0.5), [final]),
        name="genai-gpu",
        route_prefix="/",
        blocking=False,
    )
    try:
        with httpx.Client(base_url=serve_url, timeout=120) as c:
            r = c.post(
                "/v1/completions",
                json={"model": "tiny", "prompt": "def ", "max_tokens": 16, "seed": 1},
            )
            assert r.status_code == 200, r.text
            assert r.json()["usage"]["completion_tokens"] >= 1
    finally:
        serve.delete("genai-gpu")
