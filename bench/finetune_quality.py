"""Quality of the base, LoRA and fully fine-tuned SmolLM2, measured through `genai serve`
with lm-eval's harness (`pip install -e '.[eval]'`), on the held-out module-name task
(bench/module_task.py):

    python bench/module_task.py --out data/modules
    genai train jobs/smollm2-modules-lora.yaml && genai train jobs/smollm2-modules-full.yaml
    python bench/finetune_quality.py

One server holds the base, the full fine-tune (a model of its own) and the LoRA adapter
(over the base). ``stdlib_modules``: exact match of the greedy chat answer
(``local-chat-completions``, the chat template applied by the server);
``stdlib_modules_mc``: the likeliest of four candidate modules by log-probability
(``local-completions``: ``echo`` + ``logprobs``). No hub access: the tasks read local JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_throughput import genai_server

ROOT = Path(__file__).resolve().parent.parent
BASE = ROOT / "models" / "smollm2"


def evaluate(url: str, model: str, task: str, include: Path, concurrent: int) -> float:
    import lm_eval
    from lm_eval.tasks import TaskManager

    chat = task == "stdlib_modules"
    args = {
        "model": model,
        "base_url": f"{url}/v1/{'chat/completions' if chat else 'completions'}",
        "num_concurrent": concurrent,
        "max_retries": 1,
        "tokenized_requests": not chat,
    }
    if not chat:
        args["tokenizer"] = str(BASE)  # lm-eval counts context tokens with the model's own
    out = lm_eval.simple_evaluate(
        model="local-chat-completions" if chat else "local-completions",
        model_args=",".join(f"{k}={v}" for k, v in args.items()),
        tasks=[task],
        task_manager=TaskManager(include_path=str(include)),
        apply_chat_template=chat,
        log_samples=False,
    )
    metrics = out["results"][task]
    key = "exact_match,strip" if chat else "acc,none"
    return float(metrics[key])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lora", default="runs/smollm2-modules-lora/checkpoints/latest")
    p.add_argument("--full", default="runs/smollm2-modules-full/checkpoints/latest")
    p.add_argument("--tasks", nargs="+", default=["stdlib_modules", "stdlib_modules_mc"])
    p.add_argument("--data", default="data/modules")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--out", default="runs/finetune-quality.json")
    args = p.parse_args()
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from genai import checkpoint as ckpt
    from genai.hardware import machine_line

    print(machine_line(), flush=True)
    models = {"base": "smollm2"}
    served: list[str] = [str(BASE)]
    if Path(args.full).exists():
        served.append(str(Path(args.full).resolve()))
        models["full"] = ckpt.read_meta(ckpt.resolve(args.full)).name
    if Path(args.lora).exists():
        served.append(f"--adapter=lora={Path(args.lora).resolve()}")
        models["lora"] = "lora"
    results: dict[str, dict[str, float]] = {}
    with genai_server(*served, sets=("max_tokens_limit=64",)) as server:
        for label, model in models.items():
            for task in args.tasks:
                score = evaluate(server.url, model, task, Path(args.data), args.concurrency)
                results.setdefault(label, {})[task] = score
                print(f"{label} ({model}) {task}: {score:.3f}", flush=True)
    print("\n| model | " + " | ".join(args.tasks) + " |\n| --- |" + " ---: |" * len(args.tasks))
    for label, scores in results.items():
        print(f"| {label} | " + " | ".join(f"{scores[t]:.3f}" for t in args.tasks) + " |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
