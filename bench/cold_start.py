"""Start-up: command -> first training step, by phase, against plain PyTorch on the same model.

    python bench/cold_start.py                    # every row, ~6 min on 2 cores
    python bench/cold_start.py --families lm --rows embedded serve

In one run, on this machine:

- **plain**: a PyTorch script (one process) that builds the family's model (lm-tiny,
  gan-digits, vae-digits) and takes one optimizer step on a batch of the job's global size;
- **embedded**: ``genai train jobs/<job>.yaml`` starting its own local Ray (warm caches: the
  corpus tokenized and DeepSpeed's ops compiled by a run before the timed one);
- **address**: the same with ``--address`` to a running ``ray start`` head;
- **tune**: a one-trial ``genai tune`` on that head, from the trial's start;
- **serve**: a models replica of ``genai serve`` SIGKILLed: kill -> first 200 answer.

Phases come from ``GENAI_TIMELINE`` marks (``genai/timeline.py``) written by the driver
and rank 0; each row prints the seconds spent in each and the ratio of its total to the
plain script's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
JOBS = {"lm": "lm-tiny", "gan": "gan-digits", "vae": "vae-digits"}
PHASES = [
    ("imports", "imports done"),
    ("Ray up", "ray up"),
    ("data ready", "data ready"),
    ("controller + worker group", "worker function entered"),
    ("worker imports", "worker imports done"),
    ("DeepSpeed init", "engines ready"),
    ("step-0 evaluation", "step 0 evaluated"),
    ("first step", "first step"),
]
STEPS = 2  # enough for a first step; checkpoint at the end only


# ---------------------------------------------------------------------------- plain PyTorch


def plain(family: str, t0: float) -> None:
    """One process, the job's model and global batch, one AdamW step. Prints JSON."""
    import torch

    raw = yaml.safe_load((ROOT / "jobs" / f"{JOBS[family]}.yaml").read_text())
    batch = raw["train"]["micro_batch_size"] * raw["scaling"]["num_workers"]
    m = {k: v for k, v in raw["model"].items() if k != "family"}
    torch.set_num_threads(2)
    torch.manual_seed(0)
    if family == "lm":
        from genai.families.lm import ModelSpec
        from genai.models.transformer import build_lm

        vocab, seq = raw["data"]["tokenizer"]["vocab_size"], raw["data"]["seq_len"]
        model = build_lm(ModelSpec(**raw["model"]), vocab, 0)
        ids = torch.randint(0, vocab, (batch, seq))

        def loss_fn():
            return model(input_ids=ids, labels=ids).loss
    elif family == "gan":
        from genai.models.gan import Discriminator, GANConfig, Generator, d_loss

        cfg = GANConfig(**{k: m[k] for k in GANConfig.model_fields if k in m})
        g, d = Generator(cfg), Discriminator(cfg)
        model = torch.nn.ModuleList([g, d])
        labels = torch.randint(0, cfg.num_classes, (batch,))
        real = torch.rand(batch, cfg.channels, cfg.image_size, cfg.image_size)

        def loss_fn():
            fake = g(torch.randn(batch, cfg.latent_dim), labels)
            return d_loss(d(real, labels), d(fake, labels), raw["gan"]["loss"])
    else:
        from genai.models.vae import VAE, VAEConfig

        cfg = VAEConfig(**{k: m[k] for k in VAEConfig.model_fields if k in m})
        model = VAE(cfg)
        x = torch.rand(batch, cfg.channels, cfg.image_size, cfg.image_size)

        def loss_fn():
            return model(x)["neg_elbo"].mean()

    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn().backward()
    opt.step()
    print(json.dumps({"first step": time.time() - t0}))


def run_plain(family: str) -> float:
    out = subprocess.run(
        [sys.executable, __file__, "--plain", family, "--t0", repr(time.time())],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])["first step"]


# ---------------------------------------------------------------------------- genai rows


def job_file(family: str, tmp: Path, tag: str) -> Path:
    raw = yaml.safe_load((ROOT / "jobs" / f"{JOBS[family]}.yaml").read_text())
    raw["name"] = f"{raw['name']}-{tag}"
    raw["train"].update(
        {"max_steps": STEPS, "warmup_steps": 1, "log_every": 1, "eval_every": 10_000}
    )
    raw["checkpoint"] = {"dir": str(tmp / tag / family), "every_steps": 0, "keep": 1}
    raw.setdefault("data", {})["cache_dir"] = str(ROOT / ".genai_cache")
    path = tmp / f"{family}-{tag}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def timed(cmd: list[str], env: dict[str, str] | None = None) -> dict[str, float]:
    """Run a genai command with a timeline; {mark: seconds since the command started}."""
    with tempfile.NamedTemporaryFile("r", suffix=".jsonl") as tl:
        env = {**os.environ, **(env or {}), "GENAI_TIMELINE": tl.name}
        t0 = time.time()
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{r.stderr[-3000:]}")
        marks: dict[str, float] = {}
        for line in Path(tl.name).read_text().splitlines():
            rec = json.loads(line)
            marks.setdefault(rec["phase"], rec["t"] - t0)  # the first of each (restarts aside)
    return marks


def phases(marks: dict[str, float], start: str | None = None) -> dict[str, float]:
    """Seconds in each phase present in ``marks`` (from ``start``, or the command's start)."""
    out, prev = {}, marks.get(start, 0.0) if start else 0.0
    for name, mark in PHASES:
        if mark in marks and (start is None or marks[mark] >= prev):
            out[name] = marks[mark] - prev
            prev = marks[mark]
    out["total"] = prev - (marks.get(start, 0.0) if start else 0.0)
    return out


def genai(args: list[str], env: dict[str, str] | None = None) -> dict[str, float]:
    return timed([sys.executable, "-m", "genai", *args], env)


def tune_row(family: str, tmp: Path, address: str, env: dict[str, str]) -> dict[str, float]:
    base = job_file(family, tmp, "tune")
    sweep = tmp / f"sweep-{family}.yaml"
    lr = "train.lr" if family != "gan" else "gan.g_lr"
    sweep.write_text(
        yaml.safe_dump(
            {
                "name": f"cold-{family}",
                "base": base.name,
                "space": {lr: "grid([1e-3])"},
                "scheduler": {"kind": "none"},
                "storage": str(tmp / "tune" / family),
            }
        )
    )
    marks = genai(["tune", str(sweep), "--address", address], env)
    return phases(marks, start="trial started")


# ---------------------------------------------------------------------------- serve


def serve_replacement(checkpoint: Path, address: str) -> None:
    """Serve ``checkpoint`` on the cluster, SIGKILL its models replica, time kill -> 200.
    Prints JSON."""
    import signal

    import httpx
    import ray
    from ray import serve
    from ray.util.state import list_actors

    from genai import cluster
    from genai.cluster import free_port
    from genai.serve.app import build_app
    from genai.serve.spec import ServeSpec

    app = "cold-start"
    with cluster.connect(address):
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_app(ServeSpec(), [checkpoint]), name=app, route_prefix="/")
        url, body = f"http://127.0.0.1:{port}", {"prompt": "def ", "max_tokens": 4}
        try:
            with httpx.Client(base_url=url, timeout=30) as c:
                assert c.post("/v1/completions", json=body).status_code == 200
                actors = list_actors(
                    filters=[
                        ("class_name", "=", f"ServeReplica:{app}:models"),
                        ("state", "=", "ALIVE"),
                    ]
                )
                t_kill = time.time()
                os.kill(actors[0].pid, signal.SIGKILL)
                while time.time() - t_kill < 120:
                    try:
                        if c.post("/v1/completions", json=body).status_code == 200:
                            # a 200 from the old replica cannot come after its SIGKILL
                            print(json.dumps({"kill_to_200_s": time.time() - t_kill}))
                            return
                    except httpx.HTTPError:
                        pass
                    time.sleep(0.05)
                raise RuntimeError("no 200 within 120 s of the kill")
        finally:
            serve.delete(app)
            serve.shutdown()
            ray.shutdown()


# ---------------------------------------------------------------------------- main


def fmt_table(rows: dict[str, dict[str, float]], base: dict[str, float]) -> str:
    cols = [name for name, _ in PHASES]
    head = "| row | " + " | ".join(cols) + " | total (s) | ratio vs plain |"
    lines = [head, "|" + " --- |" * (len(cols) + 3)]
    for key, ph in rows.items():
        family = key.split()[0]
        cells = [f"{ph[c]:.1f}" if c in ph else "" for c in cols]
        ratio = ph["total"] / base[family]
        lines.append(f"| {key} | " + " | ".join(cells) + f" | {ph['total']:.1f} | {ratio:.1f}x |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--families", nargs="*", default=list(JOBS), choices=list(JOBS))
    p.add_argument(
        "--rows",
        nargs="*",
        default=["embedded", "address", "tune", "serve"],
        choices=["embedded", "address", "tune", "serve"],
        help="serve needs lm's embedded row (its checkpoint)",
    )
    p.add_argument("--plain", choices=list(JOBS), help=argparse.SUPPRESS)
    p.add_argument("--t0", type=float, help=argparse.SUPPRESS)
    p.add_argument("--serve", nargs=2, metavar=("CKPT", "ADDRESS"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.plain:
        plain(args.plain, args.t0)
        return 0
    if args.serve:
        serve_replacement(Path(args.serve[0]), args.serve[1])
        return 0
    from genai.hardware import machine_line
    from genai.testing.localcluster import LocalCluster

    print(machine_line(), flush=True)
    base = {f: run_plain(f) for f in args.families}
    for f, s in base.items():
        print(f"plain PyTorch {JOBS[f]}: first step {s:.1f}s after the command", flush=True)
    rows: dict[str, dict[str, float]] = {}
    results: dict[str, object] = {"plain": base}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for f in args.families:  # warm-up: corpus tokenized, DeepSpeed's ops compiled
            genai(["train", str(job_file(f, tmp, "warm")), "--fresh"])
        for f in args.families if "embedded" in args.rows or "serve" in args.rows else []:
            rows[f"{f} embedded"] = phases(genai(["train", str(job_file(f, tmp, "emb"))]))
            print(f"  {f} embedded: {rows[f'{f} embedded']}", flush=True)
        cl = LocalCluster(tmp / "cluster", cpus_per_node=4).up(1)
        env = cl.client_env()
        try:
            for f in args.families if "address" in args.rows else []:
                key = f"{f} --address"
                rows[key] = phases(
                    genai(["train", str(job_file(f, tmp, "addr")), "--address", cl.address], env)
                )
                print(f"  {key}: {rows[key]}", flush=True)
            for f in args.families if "tune" in args.rows else []:
                key = f"{f} tune trial"
                rows[key] = tune_row(f, tmp, cl.address, env)
                print(f"  {key}: {rows[key]}", flush=True)
            if "serve" in args.rows and "lm" in args.families:
                ckpt_dir, cmd = tmp / "emb" / "lm" / "latest", [sys.executable, __file__, "--serve"]
                r = subprocess.run(
                    [*cmd, str(ckpt_dir), cl.address],
                    env={**os.environ, **env},
                    capture_output=True,
                    text=True,
                    check=True,
                )
                # Ray's own log lines share stdout: the answer is the one JSON line
                line = [x for x in r.stdout.splitlines() if x.startswith('{"kill_to_200_s"')]
                killed = json.loads(line[-1])["kill_to_200_s"]
                results["serve_kill_to_200_s"] = killed
        finally:
            cl.down()
    print("\n" + fmt_table(rows, base))
    if "serve_kill_to_200_s" in results:
        print(
            f"\nserve: models replica SIGKILLed -> first 200: {results['serve_kill_to_200_s']:.1f}s"
        )
    out = ROOT / "runs" / "bench" / "cold_start.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rows": rows, **results}, indent=2))
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
