"""GPU training throughput and MFU: genai's path (`genai train`: Ray Train + DeepSpeed) on
jobs/lm-gpt2-small.yaml's shape against plain PyTorch eager and plain PyTorch +
torch.compile on the same shape, one GPU, side by side in one run.

    python bench/gpu_train.py                  # on a GPU machine: ~6 min after install
    python bench/gpu_train.py --smoke          # a tiny shape on the CPU: checks the plumbing

Data: random token ids (as GPU.md's reference rows), written as a pre-tokenized corpus
(`data.format: tokens`, streamed) with a synthetic tokenizer of GPT-2's vocabulary size,
so nothing is tokenized or downloaded. Each row runs as its own command; tokens/s is the
median over log windows after the first, "command -> first step" includes interpreter
start, imports, Ray, DeepSpeed's initialize (and op builds) and compilation.

MFU counts 6N + 12*L*H*Q*T FLOPs per token (N: parameters without position embeddings,
L layers, H heads, Q head size, T sequence) against 989 TFLOP/s (H100/H200 dense bf16),
as in GPU.md. Results: runs/bench/gpu_train.json.
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
    """Parameters without position embeddings (GPU.md's N), of the model genai builds."""
    import torch

    from genai.config import ModelSpec
    from genai.models.transformer import build_lm

    with torch.device("meta"):
        model = build_lm(ModelSpec(**spec["model"]), vocab_size, 0)
    pos = sum(p.numel() for n, p in model.named_parameters() if "wpe" in n)
    return sum(p.numel() for p in model.parameters()) - pos


def run_genai(spec: dict, workdir: Path, files: Path, tok: Path, steps: int, gpu: bool) -> dict:
    job = json.loads(json.dumps(spec))
    job["name"] = "bench-gpu"
    job["data"].update(
        source=str(files),
        format="tokens",
        include=["*.parquet"],
        tokenizer={"path": str(tok)},
        streaming=True,
        val_fraction=0.001,  # the small file
        cache_dir=str(workdir / "cache"),
    )
    job["train"].update(
        max_steps=steps,
        warmup_steps=min(job["train"]["warmup_steps"], steps // 4),
        log_every=10,
        eval_every=10**6,
        eval_batches=1,
    )
    job["scaling"].update(num_workers=1, use_gpu=gpu, cpus_per_worker=4 if gpu else 1)
    job["checkpoint"] = {"dir": str(workdir / "ckpt"), "every_steps": 0, "keep": 1}
    path = workdir / "job.json"
    path.write_text(json.dumps(job))
    return time_genai_train(path)


def plain(spec: dict, vocab_size: int, steps: int, compiled: bool, t0: float) -> None:
    """Plain PyTorch on one device: the same model genai builds, fused AdamW, bf16
    autocast on CUDA, random tokens. Prints one JSON line."""
    import torch

    from genai.config import ModelSpec
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
    first, rates, window = None, [], time.perf_counter()
    for step in range(steps):
        for _ in range(accum):
            ids = torch.randint(0, vocab_size, (micro, seq), device=device, generator=gen)
            with torch.autocast(device, dtype=torch.bfloat16, enabled=cuda):
                loss = step_model(input_ids=ids, labels=ids).loss / accum
            loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if first is None:
            if cuda:
                torch.cuda.synchronize()
            first = time.time() - t0
        if (step + 1) % 10 == 0:
            if cuda:
                torch.cuda.synchronize()
            rates.append(10 * micro * accum * seq / (time.perf_counter() - window))
            window = time.perf_counter()
    print(
        json.dumps({"first_step_s": first, "tokens_per_s": statistics.median(rates[1:] or rates)})
    )


def run_plain(args: argparse.Namespace, compiled: bool) -> dict:
    cmd = [sys.executable, __file__, "--plain", "compile" if compiled else "eager"]
    cmd += ["--steps", str(args.steps), "--t0", repr(time.time())]
    cmd += ["--smoke"] if args.smoke else []
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"plain row failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--smoke", action="store_true", help="tiny shape on the CPU")
    p.add_argument("--rows", nargs="*", default=["eager", "compile", "genai"])
    p.add_argument("--plain", choices=["eager", "compile"], help=argparse.SUPPRESS)
    p.add_argument("--t0", type=float, help=argparse.SUPPRESS)
    p.add_argument("--out", default="runs/bench/gpu_train.json")
    args = p.parse_args()
    spec = shape(args.smoke)
    vocab = spec["data"]["tokenizer"]["vocab_size"]
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
        work = Path(tmp)
        for row in args.rows:
            try:
                if row == "genai":
                    synthetic_tokenizer(vocab, work / "tok")
                    tokens = args.steps * spec["train"]["micro_batch_size"]
                    tokens *= spec["train"]["grad_accum_steps"] * spec["data"]["seq_len"]
                    files = random_corpus(work, vocab, tokens)
                    res = run_genai(spec, work, files, work / "tok", args.steps, gpu)
                else:
                    res = run_plain(args, compiled=row == "compile")
            except RuntimeError as exc:
                res = {"error": str(exc)[-2000:]}
            if "tokens_per_s" in res:
                res["mfu"] = res["tokens_per_s"] * fpt / PEAK_FLOPS
            rows[row] = res
            print(f"  {row}: {res}", flush=True)
    report = {"device": device, "params_no_pos": n, "flops_per_token": fpt, "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(
        "\n| row | tokens/s (median) | MFU | command -> first step (s) |\n| --- | ---: | ---: | ---: |"
    )
    for row, r in rows.items():
        if "tokens_per_s" in r:
            print(
                f"| {row} | {r['tokens_per_s']:,.0f} | {100 * r['mfu']:.1f}% "
                f"| {r['first_step_s'] or 0:.1f} |"
            )
        else:
            print(f"| {row} | failed | | |")
    return 0 if all("tokens_per_s" in r for r in rows.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
