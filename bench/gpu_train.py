"""GPU training throughput and MFU: genai's path (`genai train`: Ray Train + DeepSpeed) on
jobs/lm-gpt2-small.yaml's shape against plain PyTorch eager and plain PyTorch +
torch.compile on the same shape, one GPU, side by side in one run; then the GAN and VAE
specs against plain PyTorch loops (images/s), and `genai serve` of the trained LM and GAN
on the GPU against a plain FastAPI + uvicorn server (completions/s at c=32, images/s).

    python bench/gpu_train.py                  # on a GPU machine: ~8 min after install
    python bench/gpu_train.py --smoke          # tiny shapes on the CPU: checks the plumbing
    python bench/gpu_train.py --rows eager compile genai     # the LM rows only

Rows (--rows, in this order): eager, compile, genai (cold: the first genai command on
the machine), genai-warm (the same command again: what the caches buy), gan-plain, gan,
vae-plain, vae, serve (needs the genai and gan rows' checkpoints), serve-plain.

Data: random token ids (like the usual MFU reference runs), written as a pre-tokenized corpus
(`data.format: tokens`, streamed) with a synthetic tokenizer of GPT-2's vocabulary size,
so nothing is tokenized or downloaded. Each row runs as its own command; tokens/s is the
median over log windows after the first, "command -> first step" includes interpreter
start, imports, Ray, DeepSpeed's initialize (and op builds) and compilation.

MFU counts 6N + 12*L*H*Q*T FLOPs per token (N: parameters without position embeddings,
L layers, H heads, Q head size, T sequence) against 989 TFLOP/s (H100/H200 dense bf16),
(the PaLM paper's accounting). Results: runs/bench/gpu_train.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.train_throughput import time_genai_train  # noqa: E402

PEAK_FLOPS = 989e12
EOS = "<|endoftext|>"
ROWS = [
    "eager",
    "compile",
    "genai",
    "genai-warm",
    "gan-plain",
    "gan",
    "vae-plain",
    "vae",
    "serve",
    "serve-plain",
]
IMAGE_JOBS = {"gan": "gan-digits.yaml", "vae": "vae-digits.yaml"}
SERVE_CONCURRENCY, IMAGES_PER_REQUEST = 32, 16


def shape(smoke: bool) -> dict:
    """The job spec's model and batch (GPT-2 small), or a tiny one for --smoke."""
    spec = yaml.safe_load((ROOT / "jobs" / "lm-gpt2-small.yaml").read_text())
    if smoke:
        spec["model"].update(n_layer=2, n_embd=64, n_head=2, max_position=64)
        spec["data"].update(seq_len=64, tokenizer={"vocab_size": 512})
        spec["train"].update(micro_batch_size=4, grad_accum_steps=1)
        spec["deepspeed"].update(compile=False, precision="fp32")
    return spec


def synthetic_tokenizer(vocab_size: int, directory: Path) -> None:
    """A byte-level BPE tokenizer of exactly ``vocab_size`` tokens (256 bytes, EOS and
    fillers): the model's vocabulary is what matters for the FLOPs, not the merges."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {ch: i for i, ch in enumerate(alphabet)}
    vocab[EOS] = len(vocab)
    while len(vocab) < vocab_size:
        vocab[f"<f{len(vocab)}>"] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=EOS, bos_token=EOS, unk_token=EOS, pad_token=EOS
    ).save_pretrained(directory)


def random_corpus(directory: Path, vocab_size: int, tokens: int) -> Path:
    files = directory / "tokens"
    files.mkdir(parents=True)
    rng = np.random.default_rng(0)
    per_file = 1 << 22
    for i in range(max(2, -(-tokens // per_file))):
        ids = rng.integers(0, vocab_size, per_file, dtype=np.int32)
        pq.write_table(pa.table({"tokens": ids}), files / f"part-{i:05d}.parquet")
    held_out = rng.integers(0, vocab_size, 1 << 16, dtype=np.int32)
    pq.write_table(pa.table({"tokens": held_out}), files / "val-00000.parquet")
    return files


def flops_per_token(spec: dict, n_params_no_pos: int) -> float:
    m, t = spec["model"], spec["data"]["seq_len"]
    return 6 * n_params_no_pos + 12 * m["n_layer"] * m["n_embd"] * t


def count_params(spec: dict, vocab_size: int) -> int:
    """Parameters without position embeddings (the N of 6N), of the model genai builds."""
    import torch

    from genai.families.lm import ModelSpec
    from genai.models.transformer import build_lm

    with torch.device("meta"):
        model = build_lm(ModelSpec(**spec["model"]), vocab_size, 0)
    pos = sum(p.numel() for n, p in model.named_parameters() if "wpe" in n)
    return sum(p.numel() for p in model.parameters()) - pos


def run_job(job: dict, workdir: Path, steps: int, gpu: bool) -> dict:
    """``genai train`` of ``job`` on one worker (one GPU), as its own command; the checkpoint
    it leaves (the last step's) is in the result's ``checkpoint``."""
    job = json.loads(json.dumps(job))
    job["train"].update(
        max_steps=steps,
        warmup_steps=min(job["train"].get("warmup_steps", 0), steps // 4),
        log_every=10,
        eval_every=10**6,  # the last step still evaluates (and checkpoints)
    )
    job["scaling"].update(num_workers=1, use_gpu=gpu, cpus_per_worker=4 if gpu else 1)
    root = workdir / "ckpt" / job["name"]
    job["checkpoint"] = {"dir": str(root), "every_steps": 0, "keep": 1}
    path = workdir / f"{job['name']}.json"
    path.write_text(json.dumps(job))
    return {**time_genai_train(path), "checkpoint": str(root / "latest")}


def lm_job(spec: dict, workdir: Path, name: str, steps: int) -> dict:
    """The LM spec reading a random pre-tokenized corpus (written once per run)."""
    vocab = spec["data"]["tokenizer"]["vocab_size"]
    if not (workdir / "tok").exists():
        synthetic_tokenizer(vocab, workdir / "tok")
        t = spec["train"]
        per_step = t["micro_batch_size"] * t["grad_accum_steps"] * spec["data"]["seq_len"]
        random_corpus(workdir, vocab, steps * per_step)
    job = json.loads(json.dumps(spec))
    job["name"] = name
    job["data"].update(
        source=str(workdir / "tokens"),
        format="tokens",
        include=["*.parquet"],
        tokenizer={"path": str(workdir / "tok")},
        streaming=True,
        val_fraction=0.001,  # the small file
        cache_dir=str(workdir / "cache"),
    )
    job["train"]["eval_batches"] = 1
    return job


def image_job(family: str, gpu: bool) -> dict:
    """jobs/gan-digits.yaml or jobs/vae-digits.yaml, in bf16 on the GPU."""
    job = yaml.safe_load((ROOT / "jobs" / IMAGE_JOBS[family]).read_text())
    job["name"] = f"bench-gpu-{family}"
    job["deepspeed"]["precision"] = "bf16" if gpu else "fp32"
    return job


def plain(spec: dict, vocab_size: int, steps: int, compiled: bool, t0: float) -> None:
    """Plain PyTorch on one device: the same model genai builds, fused AdamW, bf16
    autocast on CUDA, random tokens. Prints one JSON line."""
    import torch

    from genai.families.lm import ModelSpec
    from genai.models.transformer import build_lm

    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    torch.manual_seed(0)
    model = build_lm(ModelSpec(**spec["model"]), vocab_size, 0).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=6e-4, weight_decay=0.1, fused=cuda)
    step_model = torch.compile(model) if compiled else model
    micro, accum = spec["train"]["micro_batch_size"], spec["train"]["grad_accum_steps"]
    seq = spec["data"]["seq_len"]
    gen = torch.Generator(device=device).manual_seed(0)

    def step() -> None:
        for _ in range(accum):
            ids = torch.randint(0, vocab_size, (micro, seq), device=device, generator=gen)
            with torch.autocast(device, dtype=torch.bfloat16, enabled=cuda):
                loss = step_model(input_ids=ids, labels=ids).loss / accum
            loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    _timed(step, steps, micro * accum * seq, "tokens_per_s", cuda, t0)


def plain_images(family: str, steps: int, t0: float) -> None:
    """Plain PyTorch loop of the GAN (D step on [real; fake], then G step through frozen D)
    or the VAE (ELBO), the same models and batch as the spec, bf16 autocast on CUDA, random
    images. Prints one JSON line."""
    import torch

    from genai.config import parse_job
    from genai.models.gan import Discriminator, GANConfig, Generator, d_loss, g_loss
    from genai.models.vae import VAE, VAEConfig

    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    spec = parse_job(image_job(family, cuda))
    m, n = spec.model, spec.train.micro_batch_size
    shape = (n, m.channels, m.image_size, m.image_size)
    torch.manual_seed(0)
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=cuda)
    if family == "gan":
        cfg = GANConfig(**m.model_dump(exclude={"family"}))
        gen, disc = Generator(cfg).to(device), Discriminator(cfg).to(device)
        betas = (spec.gan.beta1, spec.gan.beta2)
        opt_g = torch.optim.Adam(gen.parameters(), lr=spec.gan.g_lr, betas=betas, fused=cuda)
        opt_d = torch.optim.Adam(disc.parameters(), lr=spec.gan.d_lr, betas=betas, fused=cuda)

        def labels() -> torch.Tensor | None:
            return (
                torch.randint(0, cfg.num_classes, (n,), device=device) if cfg.conditional else None
            )

        def step() -> None:
            real, y, fy = torch.rand(shape, device=device) * 2 - 1, labels(), labels()
            z = torch.randn(n, cfg.latent_dim, device=device)
            with autocast:
                with torch.no_grad():
                    fake = gen(z, fy)
                both = None if y is None else torch.cat([y, fy])
                logits = disc(torch.cat([real, fake]), both)
                loss = d_loss(logits[:n], logits[n:], spec.gan.loss)
            loss.backward()
            opt_d.step()
            opt_d.zero_grad(set_to_none=True)
            disc.requires_grad_(False)
            fy = labels()
            with autocast:
                loss = g_loss(
                    disc(gen(torch.randn(n, cfg.latent_dim, device=device), fy), fy), spec.gan.loss
                )
            loss.backward()
            opt_g.step()
            opt_g.zero_grad(set_to_none=True)
            disc.requires_grad_(True)

    else:
        vae = VAE(VAEConfig(**m.model_dump(exclude={"family"}))).to(device)
        opt = torch.optim.AdamW(vae.parameters(), lr=spec.train.lr, weight_decay=0.0, fused=cuda)

        def step() -> None:
            with autocast:
                out = vae(torch.rand(shape, device=device))
                loss = (out["recon"] + out["kl"]).mean()
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

    _timed(step, steps, n, "images_per_s", cuda, t0)


def _timed(step, steps: int, items: int, key: str, cuda: bool, t0: float) -> None:
    """Run ``step`` ``steps`` times; print command -> first step and the median items/s
    over 10-step windows after the first, as one JSON line."""
    import torch

    first, rates, window = None, [], time.perf_counter()
    for i in range(steps):
        step()
        if first is None:
            if cuda:
                torch.cuda.synchronize()
            first = time.time() - t0
        if (i + 1) % 10 == 0:
            if cuda:
                torch.cuda.synchronize()
            rates.append(10 * items / (time.perf_counter() - window))
            window = time.perf_counter()
    print(json.dumps({"first_step_s": first, key: statistics.median(rates[1:] or rates)}))


def run_plain(args: argparse.Namespace, kind: str) -> dict:
    """A plain row (eager, compile, gan, vae) as its own command."""
    cmd = [sys.executable, __file__, "--plain", kind]
    cmd += ["--steps", str(args.steps), "--t0", repr(time.time())]
    cmd += ["--smoke"] if args.smoke else []
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"plain {kind} row failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_serve(
    lm: str, gan: str, gpu: bool, plain_server: bool, seconds: float, max_tokens: int
) -> dict:
    """Completions/s at c=32 (``max_tokens`` new tokens each: 64) and images/s (16 a
    request, c=32) from one server holding both checkpoints: ``genai serve`` (a replica with
    half the GPU), or bench/plain_server.py (FastAPI + uvicorn, mode A) on the same device."""
    from bench.serve_throughput import PROMPTS, genai_server, load
    from bench.serve_throughput import plain_server as plain

    lm_name, gan_name = (json.loads((Path(p) / "meta.json").read_text())["name"] for p in (lm, gan))
    completions = [
        {"model": lm_name, "prompt": pr, "max_tokens": max_tokens, "temperature": 1.0, "seed": i}
        for i, pr in enumerate(PROMPTS)
    ]
    images = [
        {"model": gan_name, "prompt": "", "n": IMAGES_PER_REQUEST, "seed": i} for i in range(8)
    ]
    t0 = time.perf_counter()
    if plain_server:
        server = plain("A", lm=lm, gan=gan, device="cuda" if gpu else "cpu")
    else:
        sets = ("generation_log.mode=off",) + (("num_gpus=0.5", "num_cpus=2") if gpu else ())
        server = genai_server(lm, gan, sets=sets)
    up = time.perf_counter() - t0
    with server:
        c = SERVE_CONCURRENCY
        load(f"{server.url}/v1/completions", completions, c, seconds / 3)  # warm-up
        text = load(f"{server.url}/v1/completions", completions, c, seconds)
        load(f"{server.url}/v1/images/generations", images, c, seconds / 3)
        pics = load(f"{server.url}/v1/images/generations", images, c, seconds)
    return {
        "up_s": up,
        "completions_per_s": text["req_s"],
        "completion_p50_ms": text["p50_ms"],
        "completion_errors": text["errors"],
        "images_per_s": pics["req_s"] * IMAGES_PER_REQUEST,
        "image_errors": pics["errors"],
    }


def run_row(
    row: str, args: argparse.Namespace, spec: dict, work: Path, gpu: bool, done: dict
) -> dict:
    if row in ("eager", "compile"):
        return run_plain(args, row)
    if row in ("gan-plain", "vae-plain"):
        return run_plain(args, row.split("-")[0])
    if row in ("genai", "genai-warm"):
        return run_job(lm_job(spec, work, f"bench-gpu-{row}", args.steps), work, args.steps, gpu)
    if row in IMAGE_JOBS:
        return run_job(image_job(row, gpu), work, args.steps, gpu)
    lm = (done.get("genai") or done.get("genai-warm") or {}).get("checkpoint")
    gan = done.get("gan", {}).get("checkpoint")
    if not (lm and gan):
        raise RuntimeError(
            f"{row} serves the checkpoints of the genai and gan rows: run them first"
        )
    # 64 new tokens, or what the smoke shape's context leaves after a prompt
    max_tokens = min(64, spec["model"]["max_position"] // 2)
    return run_serve(lm, gan, gpu, row == "serve-plain", args.serve_seconds, max_tokens)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU")
    p.add_argument("--serve-seconds", type=float, default=15.0, help="load per serving measure")
    p.add_argument("--rows", nargs="*", default=ROWS, choices=ROWS)
    p.add_argument("--plain", choices=["eager", "compile", "gan", "vae"], help=argparse.SUPPRESS)
    p.add_argument("--t0", type=float, help=argparse.SUPPRESS)
    p.add_argument("--out", default="runs/bench/gpu_train.json")
    args = p.parse_args()
    from genai.hardware import machine_line

    print(machine_line(), flush=True)
    spec = shape(args.smoke)
    vocab = spec["data"]["tokenizer"]["vocab_size"]
    if args.plain in ("gan", "vae"):
        plain_images(args.plain, args.steps, args.t0 or time.time())
        return 0
    if args.plain:
        plain(spec, vocab, args.steps, args.plain == "compile", args.t0 or time.time())
        return 0

    import torch

    gpu = torch.cuda.is_available()
    device = torch.cuda.get_device_name(0) if gpu else "CPU (no CUDA)"
    n = count_params(spec, vocab)
    fpt = flops_per_token(spec, n)
    m = spec["model"]
    print(
        f"{device}: GPT-2 {m['n_layer']}x{m['n_embd']}, {n / 1e6:.1f}M parameters without "
        f"position embeddings, seq {spec['data']['seq_len']}, micro-batch "
        f"{spec['train']['micro_batch_size']} x {spec['train']['grad_accum_steps']}, "
        f"{args.steps} steps per row",
        flush=True,
    )
    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="genai-gpu-bench-") as tmp:
        for row in args.rows:
            t0 = time.perf_counter()
            try:
                res = run_row(row, args, spec, Path(tmp), gpu, rows)
            except RuntimeError as exc:
                res = {"error": str(exc)[-2000:]}
            res["wall_s"] = time.perf_counter() - t0
            if "tokens_per_s" in res:
                res["mfu"] = res["tokens_per_s"] * fpt / PEAK_FLOPS
            rows[row] = res
            print(f"  {row}: {res}", flush=True)
    report = {"device": device, "params_no_pos": n, "flops_per_token": fpt, "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    print_tables(rows)
    return 0 if not any("error" in r for r in rows.values()) else 1


def _table(header: list[str], rows: dict[str, dict], cells) -> None:
    """A Markdown table: one line per row, ``cells(result)`` after its name, or "failed"."""
    print("\n| " + " | ".join(header) + " |\n| --- |" + " ---: |" * (len(header) - 1))
    for row, r in rows.items():
        values = ["failed"] + [""] * (len(header) - 2) if "error" in r else cells(r)
        print(f"| {row} | " + " | ".join(values) + " |")


def print_tables(rows: dict[str, dict]) -> None:
    lm = {k: r for k, r in rows.items() if k in ("eager", "compile", "genai", "genai-warm")}
    images = {k: r for k, r in rows.items() if k in ("gan-plain", "gan", "vae-plain", "vae")}
    serve = {k: r for k, r in rows.items() if k.startswith("serve")}
    if lm:
        _table(
            ["row", "tokens/s (median)", "MFU", "command -> first step (s)"],
            lm,
            lambda r: [
                f"{r['tokens_per_s']:,.0f}",
                f"{100 * r['mfu']:.1f}%",
                f"{r['first_step_s'] or 0:.1f}",
            ],
        )
    if images:
        _table(
            ["row", "images/s (median)", "command -> first step (s)"],
            images,
            lambda r: [f"{r['images_per_s']:,.0f}", f"{r['first_step_s'] or 0:.1f}"],
        )
    if serve:
        _table(
            [
                "server",
                f"completions/s (c={SERVE_CONCURRENCY})",
                "p50 ms",
                f"images/s ({IMAGES_PER_REQUEST} a request)",
                "errors",
                "up (s)",
            ],
            serve,
            lambda r: [
                f"{r['completions_per_s']:.1f}",
                f"{r['completion_p50_ms']:.0f}",
                f"{r['images_per_s']:,.0f}",
                f"{r['completion_errors'] + r['image_errors']}",
                f"{r['up_s']:.0f}",
            ],
        )


if __name__ == "__main__":
    sys.exit(main())
