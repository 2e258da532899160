"""ASHA against a full grid over the same learning rates, side by side in one run.

    python bench/tune_efficiency.py                   # lm-tiny, 8 learning rates in [1e-5, 1e-1]
    python bench/tune_efficiency.py --trials 12 --max-steps 240

Draws ``--trials`` learning rates log-uniformly from [1e-5, 1e-1] (seeded), then runs
two sweeps of lm-tiny (1 Ray Train worker per trial, DeepSpeed ZeRO-2 bf16) on one
embedded Ray: ASHA over those rates in the order drawn (what random search would
try), and a grid over the very same rates with every trial run to completion.
Reports each one's wall time and trial-steps, the fraction ASHA stopped early, and
the gap between their best held-out losses. Target: the ASHA winner within 5% of
the grid's best, for at most 40% of the grid's trial-steps.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np

from genai import cluster
from genai.data.tokens import prepare
from genai.specio import apply_overrides, read_yaml
from genai.tune.run import tune_sweep
from genai.tune.spec import Sweep, SweepSpec, parse_dimension

ROOT = Path(__file__).resolve().parent.parent


def make_sweep(name: str, lrs: list[float], scheduler: dict, args, out: Path) -> Sweep:
    base_path = ROOT / "jobs" / "lm-tiny.yaml"
    base = read_yaml(base_path)
    overrides = {
        "train.max_steps": args.max_steps,
        "train.eval_every": args.eval_every,
        "train.warmup_steps": max(1, args.max_steps // 20),
        # the same fixed held-out subset for both sweeps (the whole split costs more per rung)
        "train.eval_batches": args.eval_batches,
        "scaling.num_workers": 1,
        "checkpoint.every_steps": args.eval_every,
        "checkpoint.keep": 1,
    }
    apply_overrides(base, [f"{k}={json.dumps(v)}" for k, v in overrides.items()])
    spec = SweepSpec(
        name=name,
        base=str(base_path),
        overrides=overrides,
        space={"train.lr": parse_dimension("train.lr", f"grid({json.dumps(lrs)})")},
        num_samples=1,
        scheduler=scheduler,
        storage=str(out / name),
    )
    return Sweep(spec, base, base_path)


def summarise(result, wall: float) -> dict:
    rows = result.rows
    ok = [r for r in rows if r.status != "ERROR"]
    return {
        "wall_s": round(wall, 1),
        "trial_steps": sum(r.steps for r in rows),
        "trials": len(rows),
        "stopped_early": sum(r.status == "STOPPED" for r in rows),
        "failed": len(rows) - len(ok),
        "best_val_bpb": result.best.last,
        "best_lr": result.best.config["train.lr"],
        "per_trial": [
            {"lr": r.config["train.lr"], "status": r.status, "steps": r.steps, "val_bpb": r.last}
            for r in rows
        ],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--trials", type=int, default=8)
    p.add_argument("--max-steps", type=int, default=160)
    p.add_argument("--eval-every", type=int, default=10)
    p.add_argument("--eval-batches", type=int, default=16)
    p.add_argument("--grace", type=int, default=10)
    p.add_argument("--reduction-factor", type=float, default=4.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/bench-tune")
    args = p.parse_args()
    from genai.hardware import machine_line

    print(machine_line(), flush=True)

    out = Path(args.out).absolute()
    shutil.rmtree(out, ignore_errors=True)
    rng = np.random.default_rng(args.seed)
    lrs = [float(f"{x:.3g}") for x in np.exp(rng.uniform(np.log(1e-5), np.log(1e-1), args.trials))]
    asha = make_sweep(
        "asha",
        lrs,
        {"kind": "asha", "grace_period": args.grace, "reduction_factor": args.reduction_factor},
        args,
        out,
    )
    grid = make_sweep("grid", lrs, {"kind": "none"}, args, out)
    results = {"learning_rates": lrs, "args": vars(args)}
    with cluster.connect():
        prepare(asha.base.data)  # tokenize once, outside both timings
        for name, sweep in (("asha", asha), ("grid", grid)):
            t0 = time.perf_counter()
            result = tune_sweep(sweep, log=lambda m, n=name: print(f"[{n}] {m}", flush=True))
            results[name] = summarise(result, time.perf_counter() - t0)

    a, g = results["asha"], results["grid"]
    results["ratios"] = {
        "wall": a["wall_s"] / g["wall_s"],
        "trial_steps": a["trial_steps"] / g["trial_steps"],
        "fraction_stopped_early": a["stopped_early"] / a["trials"],
        "best_gap": (a["best_val_bpb"] - g["best_val_bpb"]) / g["best_val_bpb"],
    }
    r = results["ratios"]
    print(
        "\n| sweep | trials | stopped early | failed | trial-steps | wall (s) | best val_bpb | best lr |\n"
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n"
        + "\n".join(
            f"| {n} | {x['trials']} | {x['stopped_early']} | {x['failed']} | {x['trial_steps']} | "
            f"{x['wall_s']:.0f} | {x['best_val_bpb']:.4f} | {x['best_lr']:.3g} |"
            for n, x in (("ASHA", a), ("grid", g))
        )
        + f"\n\nASHA / grid: trial-steps {r['trial_steps']:.2f}, wall {r['wall']:.2f}; "
        f"stopped early {r['fraction_stopped_early']:.0%}; best held-out gap {r['best_gap']:+.2%} "
        f"(target: gap <= 5% at <= 40% of the trial-steps: "
        f"{'met' if r['best_gap'] <= 0.05 and r['trial_steps'] <= 0.40 else 'NOT met'})"
    )
    (out / "bench.json").write_text(json.dumps(results, indent=2))
    print(f"results: {out / 'bench.json'}")


if __name__ == "__main__":
    main()
