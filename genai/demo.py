"""``genai demo``: the whole path on an embedded local Ray, in a few minutes.

Train a small code LM (``jobs/lm-tiny.yaml``), a conditional digits GAN and a
digits VAE (2 Ray Train workers each, DeepSpeed), serve all three in one Ray
Serve application (with SmolLM2-135M-Instruct beside them when ``make smollm2`` has
imported it: ``make demo`` does), call every route over HTTP, print what came back and
where the pictures are, shut down.
"""

from __future__ import annotations

import base64
import io
import json
import time
from pathlib import Path

import httpx
import torch
from ray import serve

from genai import cluster
from genai.checkpoint import read_meta
from genai.config import load_job
from genai.pictures import png_bytes, save_grid
from genai.quality import load_classifier
from genai.serve.run import start
from genai.serve.spec import ServeSpec
from genai.train.run import train

JOBS = Path(__file__).resolve().parent.parent / "jobs"
SMOLLM2 = Path("models/smollm2").absolute()  # SmolLM2-135M-Instruct, from `make smollm2`
PROMPTS = ["def fibonacci(", "import ", "class Stack:\n    def ", "    for i in range("]


def _decode_pngs(items: list[dict]) -> torch.Tensor:
    from PIL import Image

    arrays = []
    for item in items:
        with Image.open(io.BytesIO(base64.b64decode(item["b64_json"]))) as img:
            t = torch.tensor(list(img.convert("L").getdata()), dtype=torch.float32).view(
                1, img.height, img.width
            )
        arrays.append(t / 255)
    return torch.stack(arrays)


def run_demo(steps: int | None = None, out_dir: str | Path = "runs/demo", log=print) -> dict:
    """Train the LM, GAN and VAE, serve all three in one application, call every route."""
    t0 = time.perf_counter()
    out_dir = Path(out_dir).absolute()
    over = [f"train.max_steps={steps}"] if steps else []
    specs = [load_job(JOBS / f"{n}.yaml", over) for n in ("lm-tiny", "gan-digits", "vae-digits")]
    result: dict = {"pictures": []}
    with cluster.connect():
        paths = {}
        for i, spec in enumerate(specs, 1):
            log(
                f"\n== {i}/5 train {spec.name} ({spec.model.family}): {spec.scaling.num_workers} "
                f"Ray Train workers, DeepSpeed ZeRO-{spec.deepspeed.zero_stage}"
            )
            paths[spec.name] = train(spec, fresh=True, log=log)
            log(f"checkpoint: {paths[spec.name]}")
        metas = {n: read_meta(p) for n, p in paths.items()}

        served = list(paths.values())
        if (SMOLLM2 / "meta.json").is_file():  # `make smollm2` (make demo runs it)
            served.append(SMOLLM2)
        log(f"\n== 4/5 serve {len(served)} models in one Ray Serve application")
        url = start(ServeSpec(port=cluster.free_port()), served)
        log(f"serving at {url}")

        log("\n== 5/5 call every route over HTTP")
        try:
            with httpx.Client(base_url=url, timeout=120) as client:
                models = client.get("/v1/models").json()["data"]
                log(f"GET /v1/models: {[(m['id'], m['family']) for m in models]}")
                _lm_routes(client, result, log)
                if SMOLLM2 in served:
                    _chat(client, result, log)
                clf = load_classifier(metas["gan-digits"].file(paths["gan-digits"], "classifier"))
                rows = _gan_routes(client, clf, out_dir, result, log)
                _vae_routes(client, rows, out_dir, result, log)
        finally:
            serve.shutdown()
    _summary([metas[s.name] for s in specs], paths, log)
    log(f"\ndemo finished in {time.perf_counter() - t0:.0f}s")
    h = metas["lm-tiny"].history
    result.update(checkpoints=paths, metas=metas)
    result["val_loss_first"], result["val_loss_last"] = h[0]["val_loss"], h[-1]["val_loss"]
    return result


def _lm_routes(client: httpx.Client, result: dict, log) -> None:
    """Completions for each prompt, then the first again as a stream (``genai query --stream``)."""
    result["completions"] = []
    for i, prompt in enumerate(PROMPTS):
        body = {"model": "lm-tiny", "prompt": prompt, "max_tokens": 48, "temperature": 0.7}
        r = client.post("/v1/completions", json={**body, "seed": i})
        r.raise_for_status()
        text = r.json()["choices"][0]["text"]
        result["completions"].append((prompt, text))
        log(f"\n--- POST /v1/completions prompt={prompt!r}\n{prompt}{text}")
    prompt = PROMPTS[0]
    body = {"model": "lm-tiny", "prompt": prompt, "max_tokens": 48}
    body |= {"temperature": 0.7, "seed": 0, "stream": True}
    pieces = []
    with client.stream("POST", "/v1/completions", json=body) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if line.startswith("data: {"):
                pieces.append(json.loads(line[6:])["choices"][0]["text"])
    result["stream_chunks"] = len(pieces)
    same = "".join(pieces) == result["completions"][0][1]
    log(
        f"\n--- the first prompt again with stream=true: {len(pieces)} events, "
        f"{'the same text' if same else 'A DIFFERENT TEXT'} as the plain request"
    )


def _chat(client: httpx.Client, result: dict, log) -> None:
    """The imported pretrained model, through its own chat template."""
    question = "What is the capital of France?"
    body = {"model": "smollm2", "max_tokens": 24, "temperature": 0}
    r = client.post(
        "/v1/chat/completions", json={**body, "messages": [{"role": "user", "content": question}]}
    )
    r.raise_for_status()
    result["chat"] = answer = r.json()["choices"][0]["message"]["content"]
    log(
        f"\n--- POST /v1/chat/completions model=smollm2 (imported, pretrained)\n{question}\n{answer}"
    )


def _gan_routes(client: httpx.Client, clf, out_dir: Path, result: dict, log) -> list:
    """64 digits per prompt '0'..'9'; the quality classifier says whether '7' gives sevens."""
    rows = []
    for digit in range(10):
        r = client.post(
            "/v1/images/generations",
            json={"model": "gan-digits", "prompt": str(digit), "n": 64, "seed": digit},
        )
        r.raise_for_status()
        rows.append(_decode_pngs(r.json()["data"]))
    grid = torch.cat([row[:10] for row in rows])
    path = save_grid(grid, out_dir / "gan-digits-by-prompt.png", cols=10)
    log(f"\nPOST /v1/images/generations gan-digits, prompts '0'..'9' (a row each): {path}")
    result["pictures"].append(path)
    rates = {str(d): float((clf.predict(row) == d).float().mean()) for d, row in enumerate(rows)}
    result["prompt_class_rates"] = rates
    log(
        "share of 64 images per prompt that the digits classifier labels as the prompt: "
        + ", ".join(f"'{d}' {r:.0%}" for d, r in rates.items())
    )
    return rows


def _vae_routes(client: httpx.Client, rows: list, out_dir: Path, result: dict, log) -> None:
    """Prior samples, then reconstructions and an interpolation of GAN-drawn digits (any 8x8
    PNG would do)."""

    def post(path: str, body: dict) -> torch.Tensor:
        r = client.post(path, json={"model": "vae-digits", **body})
        r.raise_for_status()
        return _decode_pngs(r.json()["data"])

    samples = post("/v1/images/generations", {"prompt": "", "n": 64, "seed": 0})
    path = save_grid(samples, out_dir / "vae-digits-samples.png", cols=8)
    log(f"POST /v1/images/generations vae-digits, 64 prior samples: {path}")
    result["pictures"].append(path)
    inputs = [item for row in rows[:8] for item in row[:2]]
    b64 = [base64.b64encode(png_bytes(x)).decode() for x in inputs]
    recon = post("/v1/vae/reconstruct", {"images": b64})
    pairs = torch.stack([torch.stack(inputs), recon], 1).flatten(0, 1)
    path = save_grid(pairs, out_dir / "vae-digits-reconstruct.png", cols=8)
    log(f"POST /v1/vae/reconstruct: 16 digits beside their reconstructions: {path}")
    result["pictures"].append(path)
    steps = post("/v1/vae/interpolate", {"image_a": b64[2], "image_b": b64[14], "steps": 10})
    path = save_grid(steps, out_dir / "vae-digits-interpolate.png", cols=10)
    log(f"POST /v1/vae/interpolate: '1' to '7' in 10 steps: {path}")
    result["pictures"].append(path)


def _summary(metas: list, paths: dict, log) -> None:
    """What each model learned, in its own measure."""
    lm, gan, vae = metas
    h, g, v = lm.history, gan.history, vae.history
    log(
        f"\nlm-tiny validation loss: {h[0]['val_loss']:.3f} at step 0 -> {h[-1]['val_loss']:.3f} "
        f"at step {int(h[-1]['step'])} (nats/token)"
    )
    log(
        f"lm-tiny held-out bits per byte: {h[-1]['val_bpb']:.3f}; xz -9e on the same held-out files: "
        f"{h[-1]['xz_bpb']:.3f} (model/xz {h[-1]['bpb_vs_xz']:.2f})"
    )
    log(
        f"gan-digits feature FD: {g[0]['fd']:.1f} at step 0 -> {g[-1]['fd']:.1f} at step {int(g[-1]['step'])} "
        f"(real-vs-real floor {g[-1]['real_fd_floor']:.1f}); classes covered in 1,000 samples: {g[-1]['classes_covered']:.0f}/10; "
        f"conditional accuracy {g[-1]['cond_accuracy']:.1%}"
    )
    log(
        f"vae-digits held-out -ELBO: {v[0]['val_neg_elbo']:.1f} -> {v[-1]['val_neg_elbo']:.1f} nats/image "
        f"(IW-64 bound {v[-1]['val_iw64_bound']:.1f}; diagonal Gaussian baseline {v[-1]['baseline_gaussian_nll']:.1f})"
    )
    for m in (gan, vae):
        for name in m.pictures:
            log(f"training picture: {paths[m.name] / name}")
