"""``genai demo``: the whole path on an embedded local Ray, in a few minutes.

Train ``jobs/lm-tiny.yaml`` (2 workers, ZeRO-2), serve its checkpoint with Ray
Serve, send completion requests over HTTP, print what came back, shut down.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import httpx
from ray import serve

from genai import cluster
from genai.config import ServeSpec, load_job
from genai.serve.run import start
from genai.train.checkpoint import read_meta
from genai.train.run import train

JOBS = Path(__file__).resolve().parent.parent / "jobs"
PROMPTS = ["def fibonacci(", "import ", "class Stack:\n    def ", "    for i in range("]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_demo(steps: int | None = None, log=print) -> dict:
    t0 = time.perf_counter()
    overrides = [f"train.max_steps={steps}"] if steps else []
    spec = load_job(JOBS / "lm-tiny.yaml", overrides)
    with cluster.connect():
        log(
            f"== 1/3 train {spec.name}: {spec.scaling.num_workers} Ray Train workers, DeepSpeed ZeRO-{spec.deepspeed.zero_stage}"
        )
        path = train(spec, fresh=True, log=log)
        meta = read_meta(path)
        history = meta["history"]
        first, last = history[0], history[-1]
        log(f"checkpoint: {path}")

        log("== 2/3 serve it with Ray Serve")
        url = start(ServeSpec(port=free_port()), [path])
        log(f"serving at {url}")

        log("== 3/3 query it over HTTP (POST /v1/completions)")
        completions = []
        try:
            with httpx.Client(base_url=url, timeout=120) as client:
                models = client.get("/v1/models").json()["data"]
                log(f"models: {[m['id'] for m in models]}")
                for i, prompt in enumerate(PROMPTS):
                    r = client.post(
                        "/v1/completions",
                        json={
                            "model": spec.name,
                            "prompt": prompt,
                            "max_tokens": 48,
                            "temperature": 0.7,
                            "seed": i,
                        },
                    )
                    r.raise_for_status()
                    text = r.json()["choices"][0]["text"]
                    completions.append((prompt, text))
                    log(f"\n--- prompt: {prompt!r}\n{prompt}{text}")
        finally:
            serve.shutdown()
    log(
        f"\nvalidation loss: {first['val_loss']:.3f} at step {first['step']} -> "
        f"{last['val_loss']:.3f} at step {last['step']} (nats/token)"
    )
    log(f"demo finished in {time.perf_counter() - t0:.0f}s; checkpoint {path}")
    return {
        "checkpoint": path,
        "val_loss_first": first["val_loss"],
        "val_loss_last": last["val_loss"],
        "completions": completions,
    }
