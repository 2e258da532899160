"""Audio GAN training throughput: genai (``genai train jobs/audio-digits.yaml``, 2 Ray Train
workers, two DeepSpeed engines) vs a plain PyTorch loop of the same model.

    python bench/audio_train.py                 # ~4 min on 2 cores
    python bench/audio_train.py --steps 200 --repeats 3

Both sides: the job's GAN (``model.arch``: SpecGAN's log-mel images, each batch of real
clips turned into them as it is drawn, or WaveGAN's raw samples), the same global batch,
the same step shapes (one discriminator forward over [real; fake] and a generator step
with the discriminator frozen), the job's loss, Adam, fp32. genai runs as its
own command; its clips/s is the median of its progress windows after the first, as is
the baseline's (one process, 2 threads). The ratio is genai's over the baseline's, per
repeat; the table quotes medians.
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

ROOT = Path(__file__).resolve().parent.parent
JOB = ROOT / "jobs" / "audio-digits.yaml"
RATE = re.compile(r"\] step \d+/\d+ .* ([\d,.]+) clips/s")


def genai_rate(steps: int, out: Path) -> float:
    cmd = [sys.executable, "-m", "genai.cli", "train", str(JOB), "--fresh"]
    for kv in (
        f"train.max_steps={steps}",
        "train.log_every=25",
        f"train.eval_every={steps * 10}",
        "checkpoint.every_steps=0",
        f"checkpoint.dir={out}",
        "data.judge=false",
        "audio.eval_samples=10",
    ):
        cmd += ["--set", kv]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    rates, tail = [], []
    for line in proc.stdout or []:
        tail = [*tail[-40:], line]
        m = RATE.search(line)
        if m:
            rates.append(float(m[1].replace(",", "")))
    if proc.wait() != 0:
        raise RuntimeError("genai train failed:\n" + "".join(tail))
    return statistics.median(rates[1:] or rates)


def baseline(steps: int) -> None:
    """Plain PyTorch: one process, 2 threads, the job's model, batch and data. Prints JSON."""
    import torch

    from genai.config import load_job
    from genai.families.audio import digits
    from genai.families.audio.data import load_corpus
    from genai.families.audio.nets import ClipCodec, build
    from genai.models.gan import d_loss, g_loss

    torch.set_num_threads(2)
    spec = load_job(JOB)
    corpus, train, _ = load_corpus(spec, log=lambda _: None)
    real_all = torch.from_numpy(digits.to_float(corpus.clips[train]))
    labels_all = torch.from_numpy(corpus.labels[train])
    cfg, a = spec.model, spec.audio
    batch = spec.global_batch
    torch.manual_seed(0)
    g, d = build(cfg)
    codec = ClipCodec(cfg)
    og = torch.optim.Adam(g.parameters(), lr=a.g_lr, betas=(a.beta1, a.beta2))
    od = torch.optim.Adam(d.parameters(), lr=a.d_lr, betas=(a.beta1, a.beta2))
    gen = torch.Generator().manual_seed(0)
    rates, window = [], time.perf_counter()
    for step in range(steps):
        idx = torch.randint(0, len(real_all), (batch,), generator=gen)
        real, y = codec.encode(real_all[idx]), labels_all[idx]
        fake_y = torch.randint(0, 10, (batch,), generator=gen)
        with torch.no_grad():
            fake = g(torch.randn(batch, cfg.latent_dim), fake_y)
        logits = d(torch.cat([real, fake]), torch.cat([y, fake_y]))
        loss = d_loss(logits[:batch], logits[batch:], a.loss)
        od.zero_grad(set_to_none=True)
        loss.backward()
        od.step()
        for p in d.parameters():
            p.requires_grad_(False)
        n = spec.train.micro_batch_size  # genai's G step: a micro-batch per worker
        gy = torch.randint(0, 10, (n * spec.scaling.num_workers,), generator=gen)
        loss = g_loss(d(g(torch.randn(len(gy), cfg.latent_dim), gy), gy), a.loss)
        og.zero_grad(set_to_none=True)
        loss.backward()
        og.step()
        for p in d.parameters():
            p.requires_grad_(True)
        if (step + 1) % 25 == 0:
            rates.append(25 * batch / (time.perf_counter() - window))
            window = time.perf_counter()
    print(json.dumps({"clips_per_s": statistics.median(rates[1:] or rates)}))


def baseline_rate(steps: int) -> float:
    out = subprocess.run(
        [sys.executable, __file__, "--baseline", "--steps", str(steps)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])["clips_per_s"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--baseline", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.baseline:
        baseline(args.steps)
        return
    from genai.hardware import machine_line

    print(machine_line())
    print(f"{JOB.name}, {args.steps} steps per run, {args.repeats} repeats, side by side")
    plain, ours = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            plain.append(baseline_rate(args.steps))
            ours.append(genai_rate(args.steps, Path(tmp) / f"run{r}"))
            print(f"repeat {r}: plain {plain[-1]:.1f} clips/s, genai {ours[-1]:.1f} clips/s")
    ratios = [o / b for o, b in zip(ours, plain, strict=True)]
    print("| row | clips/s (median) | ratio vs plain |\n| --- | ---: | ---: |")
    print(f"| plain PyTorch, 1 process, 2 threads | {statistics.median(plain):.1f} | 1.00 |")
    print(
        f"| genai: 2 Ray Train workers, ZeRO-2 fp32 | {statistics.median(ours):.1f} | "
        f"{statistics.median(ratios):.2f} |"
    )


if __name__ == "__main__":
    main()
