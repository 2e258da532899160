"""Fine-tuning throughput: `genai train` (LoRA and full, 2 Ray Train workers, DeepSpeed
ZeRO-2 bf16) of SmolLM2-135M against a plain Hugging Face + peft loop on the same model,
global batch, sequence length and data.

    make smollm2 && python bench/finetune.py            # 4 rows, ~6 min on 2 cores
    python bench/finetune.py --steps 20 --rows lora

Each row is its own command (a subprocess). tokens/s is the median over log windows after
the first; peak memory is the training process's peak RSS (genai: worker rank 0's, which
holds a full copy of the frozen base; the plain loop: its one process). The plain loop is
one process with 2 threads, bf16 autocast, AdamW over the trainable parameters: what a
peft user writes.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_throughput import time_genai_train

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "models" / "smollm2"
SEQ, MICRO, WORKERS = 256, 2, 2
LORA = {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": "all-linear"}
DATA = {"source": "stdlib", "max_bytes": 2_000_000, "seq_len": SEQ}


def job(kind: str, steps: int, root: Path) -> dict:
    model: dict = {"family": "lm", "arch": "llama", "pretrained_path": str(MODEL)}
    if kind == "lora":
        model["lora"] = LORA
    return {
        "name": f"bench-ft-{kind}",
        "model": model,
        "data": {**DATA, "cache_dir": str(ROOT / ".genai_cache")},
        "train": {
            "max_steps": steps,
            "micro_batch_size": MICRO,
            "lr": 2e-4 if kind == "lora" else 5e-5,
            "warmup_steps": 1,
            "log_every": 3,
            "eval_every": 10_000,
            "eval_batches": 1,
        },
        "deepspeed": {"zero_stage": 2, "precision": "bf16"},
        "scaling": {"num_workers": WORKERS},
        "checkpoint": {"dir": str(root / kind), "every_steps": 0, "keep": 1},
    }


def run_genai(kind: str, steps: int, root: Path) -> dict:
    from genai import checkpoint as ckpt

    spec = root / f"{kind}.json"
    spec.write_text(json.dumps(job(kind, steps, root)))
    out = time_genai_train(spec)
    meta = ckpt.read_meta(ckpt.find_latest(root / kind))
    return {**out, "peak_mb": meta.metrics.get("rss_peak_mb", float("nan"))}


def baseline(kind: str, steps: int) -> None:
    """Plain HF (+ peft): one process, 2 threads. Prints JSON."""
    import torch
    from transformers import AutoModelForCausalLM

    from genai.data.batches import BlockSampler
    from genai.data.tokens import prepare
    from genai.families.lm import DataSpec

    torch.set_num_threads(2)
    spec = DataSpec(**{**DATA, "cache_dir": str(ROOT / ".genai_cache")})
    spec = spec.model_copy(
        update={"tokenizer": spec.tokenizer.model_copy(update={"path": str(MODEL)})}
    )
    data = prepare(spec, log=lambda m: None)
    sampler = BlockSampler(data.load("train"), SEQ, MICRO * WORKERS, 1, 0, 1, seed=0)
    torch.manual_seed(0)
    # LoRA: the frozen base in bf16 (peft keeps the adapters in fp32); full: fp32 master weights
    dtype = torch.bfloat16 if kind == "lora" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(MODEL, dtype=dtype, attn_implementation="sdpa")
    if kind == "lora":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(
            model,
            LoraConfig(
                r=LORA["r"],
                lora_alpha=LORA["alpha"],
                lora_dropout=0.0,
                target_modules="all-linear",
                task_type="CAUSAL_LM",
            ),
        )
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=2e-4, weight_decay=0.0)
    rates, window = [], time.perf_counter()
    for step in range(steps):
        ids = sampler.batch(step, 0)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(input_ids=ids, labels=ids, use_cache=False).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if (step + 1) % 3 == 0:
            rates.append(3 * sampler.global_batch * SEQ / (time.perf_counter() - window))
            window = time.perf_counter()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"tokens_per_s": statistics.median(rates[1:] or rates), "peak_mb": peak}))


def run_baseline(kind: str, steps: int) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--baseline", kind, "--steps", str(steps)],
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--rows", nargs="*", choices=["lora", "full"], default=["lora", "full"])
    p.add_argument("--baseline", choices=["lora", "full"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.baseline:
        baseline(args.baseline, args.steps)
        return
    if not (MODEL / "meta.json").is_file():
        sys.exit(f"{MODEL} is missing: run `make smollm2` first")
    from genai.hardware import machine_line

    print(machine_line())
    print(
        f"SmolLM2-135M, global batch {MICRO * WORKERS} x {SEQ} tokens, {args.steps} steps "
        f"per row, LoRA r={LORA['r']} on all linear layers"
    )
    print(
        "| row | tokens/s (median) | ratio vs plain | peak RSS (MB) |\n| --- | ---: | ---: | ---: |"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.rows:
            base = run_baseline(kind, args.steps)
            _row(
                f"plain HF{' + peft' if kind == 'lora' else ''} {kind}, 1 process, 2 threads",
                base,
                base,
            )
            mine = run_genai(kind, args.steps, Path(tmp))
            _row(f"genai train {kind}: 2 workers, ZeRO-2 bf16", mine, base)


def _row(key: str, r: dict, base: dict) -> None:
    ratio = r["tokens_per_s"] / base["tokens_per_s"]
    print(f"| {key} | {r['tokens_per_s']:,.0f} | {ratio:.2f} | {r['peak_mb']:,.0f} |", flush=True)


if __name__ == "__main__":
    main()
