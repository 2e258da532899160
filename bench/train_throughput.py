"""Training throughput: genai (2 Ray Train workers + DeepSpeed ZeRO 0-3) vs a plain PyTorch loop.

    python bench/train_throughput.py                 # all rows, ~6 min on 2 cores
    python bench/train_throughput.py --stages 2 --steps 40

Every row runs as its own command (a subprocess), so "command -> first step"
includes interpreter start, imports, Ray start-up, the worker group and
DeepSpeed's initialize. Same model (GPT-2 shape, 4 x 256), same global batch
(16 x 128 tokens), same data, same precision. Steady-state tokens/s is the median over
log windows after the first. The baseline is a single process with 2 threads.

Precision follows genai's ``precision: auto`` rule on both sides (bf16 only where the
CPU computes it natively: emulated bf16 is tens of times slower and the rows would not
finish); ``--precision all`` prints fp32 and bf16 rows, each against its own baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RATE = re.compile(r" ([\d,.]+) (tok|img)/s")
ROOT = Path(__file__).resolve().parent.parent
MODEL = {"n_layer": 4, "n_embd": 256, "n_head": 4, "max_position": 128}
SEQ, MICRO, WORKERS = 128, 8, 2
DATA = {
    "source": "stdlib",
    "max_bytes": 4_000_000,
    "seq_len": SEQ,
    "tokenizer": {"vocab_size": 4096},
}


def job(stage: int, steps: int, precision: str, root: Path) -> dict:
    return {
        "name": f"bench-z{stage}-{precision}",
        "model": MODEL,
        "data": {**DATA, "cache_dir": str(ROOT / ".genai_cache")},
        "train": {
            "max_steps": steps,
            "micro_batch_size": MICRO,
            "warmup_steps": 2,
            "log_every": 5,
            "eval_every": 10_000,
            "eval_batches": 1,
        },
        "deepspeed": {"zero_stage": stage, "precision": precision},
        "scaling": {"num_workers": WORKERS},
        "checkpoint": {"dir": str(root / f"z{stage}-{precision}"), "every_steps": 0, "keep": 1},
    }


def time_genai_train(spec: Path) -> dict:
    """Run ``genai train SPEC`` as its own command: command -> first step, and the median
    tokens/s (LM) or images/s (GAN, VAE) over the log windows after the first (shared with
    bench/gpu_train.py)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "genai.cli", "train", str(spec)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    first, rates, tail, unit = None, [], [], "tokens"
    for line in proc.stdout:
        tail = [*tail[-40:], line]
        if first is None and "first step done" in line:
            first = time.perf_counter() - t0
        rate = RATE.search(line) if "] step " in line else None
        if rate:
            unit = "tokens" if rate[2] == "tok" else "images"
            rates.append(float(rate[1].replace(",", "")))
    if proc.wait() != 0:
        raise RuntimeError(f"genai train {spec} failed:\n" + "".join(tail))
    return {
        "first_step_s": first,
        f"{unit}_per_s": statistics.median(rates[1:] or rates),
        "windows": len(rates),
    }


def run_genai(stage: int, steps: int, precision: str, root: Path) -> dict:
    spec = root / f"z{stage}-{precision}.json"
    spec.write_text(json.dumps(job(stage, steps, precision, root)))
    return time_genai_train(spec)


def baseline(steps: int, precision: str, t0: float) -> None:
    """Plain PyTorch: one process, 2 threads, the same model, batch and data. Prints JSON."""
    import torch

    from genai.data.batches import BlockSampler
    from genai.data.tokens import prepare
    from genai.families.lm import DataSpec, ModelSpec
    from genai.models.transformer import build_lm

    torch.set_num_threads(2)
    data = prepare(
        DataSpec(**{**DATA, "cache_dir": str(ROOT / ".genai_cache")}), log=lambda m: None
    )
    sampler = BlockSampler(data.load("train"), SEQ, MICRO * WORKERS, 1, 0, 1, seed=0)
    torch.manual_seed(0)
    model = build_lm(ModelSpec(**MODEL), data.vocab_size, data.eos_id).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    first, rates, window = None, [], time.perf_counter()
    for step in range(steps):
        ids = sampler.batch(step, 0)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if first is None:
            first = time.time() - t0  # t0: when the parent started this command
        if (step + 1) % 5 == 0:
            rates.append(5 * sampler.global_batch * SEQ / (time.perf_counter() - window))
            window = time.perf_counter()
    print(
        json.dumps(
            {
                "first_step_s": first,
                "tokens_per_s": statistics.median(rates[1:] or rates),
                "windows": len(rates),
            }
        )
    )


def run_baseline(steps: int, precision: str) -> dict:
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--baseline",
            precision,
            "--steps",
            str(steps),
            "--t0",
            repr(time.time()),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def precisions(asked: str) -> list[str]:
    """The precisions to compare, each run by both sides: ``auto`` is genai's own rule."""
    from genai.hardware import resolve_precision

    return ["fp32", "bf16"] if asked == "all" else [resolve_precision(asked)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--stages", type=int, nargs="*", default=[0, 1, 2, 3])
    p.add_argument("--precision", choices=["auto", "fp32", "bf16", "all"], default="auto")
    p.add_argument("--baseline", choices=["fp32", "bf16"], help=argparse.SUPPRESS)
    p.add_argument("--t0", type=float, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.baseline:
        baseline(args.steps, args.baseline, args.t0 or time.time())
        return

    from genai.hardware import machine_line

    print(machine_line())
    print(
        f"model GPT-2 {MODEL['n_layer']}x{MODEL['n_embd']}, global batch {MICRO * WORKERS}x{SEQ} "
        f"tokens, {args.steps} steps per row"
    )
    rows: dict[str, dict] = {}
    print(
        "| row | tokens/s (median) | ratio vs plain, same precision | command -> first step (s) |"
        "\n| --- | ---: | ---: | ---: |"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for precision in precisions(args.precision):
            key = f"plain PyTorch, 1 process, 2 threads, {precision}"
            rows[key] = base = run_baseline(args.steps, precision)
            _row(key, base, base)
            for stage in args.stages:
                key = f"genai: 2 Ray Train workers, ZeRO-{stage} {precision}"
                rows[key] = run_genai(stage, args.steps, precision, Path(tmp))
                _row(key, rows[key], base)


def _row(key: str, r: dict, base: dict) -> None:
    ratio = r["tokens_per_s"] / base["tokens_per_s"]
    print(
        f"| {key} | {r['tokens_per_s']:,.0f} | {ratio:.2f} | {r['first_step_s']:.1f} |",
        flush=True,
    )


if __name__ == "__main__":
    main()
