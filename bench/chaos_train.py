"""Chaos benchmark: one LM job on a 3-node local Ray cluster while processes are killed at
random moments, 20 times in all: a training worker (Ray Train restarts the worker group), a
worker node's raylet (the node is lost; a replacement joins a few seconds later and the run,
with fixed workers, waits for it), or the driver (SIGKILL, then `genai train --resume`).

Then it reports whether the run completed to max_steps, each recovery with the steps it
lost (the last step trained before the kill minus the step training continued from), that
every committed checkpoint loads and its safetensors weights equal its DeepSpeed shards,
and that no staging dir is left.

    python bench/chaos_train.py                 # 20 kills (about 16 min here)
    python bench/chaos_train.py --kills 5 --seed 1
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from genai import checkpoint as ckpt
from genai.testing.localcluster import LocalCluster, session_pids

TRAINER = {"trainer": 1}
STEP_RE = re.compile(r"\] step (\d+)/")
FROM_RE = re.compile(
    r"(?:recovered from a failure: continuing from \S+|resumed from \S+|"
    r"recovered from a failure: no checkpoint committed yet, starting again) at step (\d+)"
)


def job_spec(workdir: Path, max_steps: int, every: int) -> dict:
    import sysconfig

    corpus = workdir / "corpus"
    corpus.mkdir(exist_ok=True)
    for pkg in ("json", "email", "logging"):
        for f in sorted((Path(sysconfig.get_paths()["stdlib"]) / pkg).glob("*.py")):
            (corpus / f"{pkg}_{f.name}").write_bytes(f.read_bytes())
    return {
        "name": "chaos-lm",
        "model": {"n_layer": 2, "n_embd": 64, "n_head": 2, "max_position": 64},
        "data": {
            "source": str(corpus),
            "seq_len": 64,
            "max_bytes": 400_000,
            "tokenizer": {"vocab_size": 512},
            "cache_dir": str(workdir / "cache"),
        },
        "train": {
            "max_steps": max_steps,
            "micro_batch_size": 8,
            "lr": 2e-3,
            "warmup_steps": 10,
            "log_every": 1,
            "eval_every": 100,
            "eval_batches": 2,
            "max_failures": 1000,  # every kill is a failure to recover from
        },
        "deepspeed": {"zero_stage": 2, "precision": "fp32"},
        "scaling": {"num_workers": 2, "resources_per_worker": TRAINER},
        "checkpoint": {"dir": str(workdir / "ckpt"), "every_steps": every, "keep": 10_000},
    }


class Driver:
    """`genai train` against the cluster, its output parsed as it comes."""

    def __init__(self, cluster: LocalCluster, spec_path: Path, log_path: Path) -> None:
        self.cluster, self.spec_path, self.log = cluster, spec_path, log_path.open("a")
        self.last_step = 0  # last step trained, as the driver printed it
        self.resumed_at: list[int] = []  # each "continuing from ... at step N", in order
        self.proc: subprocess.Popen | None = None

    def start(self, resume: bool) -> None:
        cmd = [sys.executable, "-m", "genai", "train", str(self.spec_path)]
        cmd += ["--address", self.cluster.address] + (["--resume"] if resume else [])
        env = {**os.environ, **self.cluster.client_env()}
        self.proc = subprocess.Popen(
            cmd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        threading.Thread(target=self._read, args=(self.proc,), daemon=True).start()

    def _read(self, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            self.log.write(line)
            if m := STEP_RE.search(line):
                self.last_step = max(self.last_step, int(m.group(1)))
            if m := FROM_RE.search(line):
                self.resumed_at.append(int(m.group(1)))

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


def add_node(cluster: LocalCluster, tries: int = 3) -> None:
    """A replacement node; on a loaded 2-core machine a node's own startup can time out."""
    for attempt in range(tries):
        try:
            cluster.add_node(resources=TRAINER)
            return
        except RuntimeError as exc:
            print(
                f"  replacement node failed to start ({attempt + 1}/{tries}): {exc}".splitlines()[0]
            )
    raise RuntimeError("no replacement node could be started")


def train_worker_pids(cluster: LocalCluster) -> list[int]:
    pids = []
    for node in cluster.nodes.values():
        for pid in session_pids(node.pid):
            try:
                title = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if title.startswith(b"ray::RayTrainWorker"):
                pids.append(pid)
    return pids


def verify_checkpoint(path: Path) -> str | None:
    """None if it loads and its exported weights equal its DeepSpeed shards, else why not."""
    try:
        meta = ckpt.read_meta(path)
        exported = load_file(path / ckpt.WEIGHTS)
        tag = ckpt.step_name(meta.step)
        states = path / ckpt.DS_DIR / "model" / tag / "mp_rank_00_model_states.pt"
        # our own file, written by this run: DeepSpeed's format is a pickle
        module = torch.load(states, map_location="cpu", weights_only=False)["module"]
        for name, t in module.items():
            key = name if name in exported else name.removeprefix("module.")
            if key not in exported:
                if "lm_head" in name:  # tied to the input embedding, exported once
                    continue
                return f"{name} missing from {ckpt.WEIGHTS}"
            if not torch.equal(exported[key].float(), t.float()):
                return f"{name} differs between {ckpt.WEIGHTS} and the DeepSpeed shard"
        shards = list((path / ckpt.DS_DIR / "model" / tag).glob("*zero_pp_rank_*optim_states.pt"))
        if len(shards) != meta.world_size:
            return f"{len(shards)} optimizer shards for {meta.world_size} ranks"
    except Exception as exc:  # a corrupt checkpoint is a result, not a crash
        return f"{type(exc).__name__}: {exc}"
    return None


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--kills", type=int, default=20)
    p.add_argument("--max-steps", type=int, default=0, help="default: 5 per kill + 40")
    p.add_argument("--every", type=int, default=5, help="checkpoint interval (steps)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/bench/chaos_train.json")
    args = p.parse_args()
    from genai.hardware import machine_line

    print(machine_line(), flush=True)
    rng = random.Random(args.seed)
    max_steps = args.max_steps or 5 * args.kills + 40
    workdir = Path(tempfile.mkdtemp(prefix="genai-chaos-"))
    spec_path = workdir / "job.json"
    spec_path.write_text(json.dumps(job_spec(workdir, max_steps, args.every)))
    root = workdir / "ckpt"
    cluster = LocalCluster(workdir / "cluster").up(3, worker_resources=TRAINER)
    print(f"cluster up ({cluster.address}); job to step {max_steps}, checkpoint every {args.every}")
    driver = Driver(cluster, spec_path, workdir / "driver.log")
    kinds = ["worker", "raylet", "driver"]
    events: list[dict] = []
    t0 = time.time()
    try:
        driver.start(resume=False)
        for i in range(args.kills):
            # a random moment once training has made progress since the last recovery
            floor = driver.last_step
            deadline = time.time() + 600
            while driver.last_step <= floor + 1 and time.time() < deadline:
                if driver.proc.poll() is not None:
                    break
                time.sleep(0.2)
            if driver.proc.poll() is not None:
                print(f"the run ended before kill {i + 1} (exit {driver.proc.returncode})")
                break
            time.sleep(rng.uniform(0.5, 8.0))
            kind = kinds[i % 3] if i < 3 else rng.choice(kinds)
            before = driver.last_step
            n_resumed = len(driver.resumed_at)
            t_kill = time.time()
            if kind == "worker":
                pids = train_worker_pids(cluster)
                if not pids:
                    kind = "driver"
                else:
                    os.kill(rng.choice(pids), signal.SIGKILL)
            if kind == "raylet":
                lost = rng.choice([n for n in cluster.nodes if n != "node0"])
                cluster.kill_raylet(lost)
                time.sleep(rng.uniform(2, 6))  # the machine is gone a while
                cluster.stop_node(lost)
                add_node(cluster)
            if kind == "driver":
                driver.kill()
                time.sleep(2)
                driver.start(resume=True)
            while len(driver.resumed_at) == n_resumed and time.time() < t_kill + 600:
                if driver.proc.poll() is not None:
                    break
                time.sleep(0.2)
            if len(driver.resumed_at) == n_resumed:
                print(f"kill {i + 1} ({kind}): no recovery seen")
                events.append({"kill": i + 1, "kind": kind, "recovered": False})
                break
            at = driver.resumed_at[-1]
            driver.last_step = at  # progress is counted from here on
            ev = {
                "kill": i + 1,
                "kind": kind,
                "t_s": round(t_kill - t0, 1),
                "last_step_before": before,
                "continued_from": at,
                "steps_lost": max(0, before - at),
                "recovery_s": round(time.time() - t_kill, 1),
                "recovered": True,
            }
            events.append(ev)
            print(
                f"kill {i + 1:2d} {kind:6s} at step {before:4d} -> continued from {at:4d} "
                f"(lost {ev['steps_lost']}) in {ev['recovery_s']:.1f}s"
            )
        rc = driver.proc.wait(timeout=1800)
    finally:
        if driver.proc and driver.proc.poll() is None:
            driver.kill()
        leaders = [n.pid for n in cluster.nodes.values()]
        cluster.down()
    left = [pid for sid in leaders for pid in session_pids(sid)]

    checkpoints = ckpt.list_checkpoints(root)
    bad = {p.name: why for p in checkpoints if (why := verify_checkpoint(p))}
    steps = [ckpt.read_meta(p).step for p in checkpoints]
    expected = list(range(args.every, max_steps + 1, args.every))
    staging = [p.name for p in root.iterdir() if p.name.startswith((".step-", ".reshard-"))]
    lost = [e["steps_lost"] for e in events if e.get("recovered")]
    report = {
        "kills": len(events),
        "by_kind": {k: sum(e["kind"] == k for e in events) for k in kinds},
        "completed": rc == 0 and steps[-1:] == [max_steps],
        "max_steps": max_steps,
        "checkpoint_every": args.every,
        "recoveries": sum(e.get("recovered", False) for e in events),
        "steps_lost_max": max(lost, default=0),
        "steps_lost_median": statistics.median(lost) if lost else 0,
        "recovery_s_median": statistics.median(
            [e["recovery_s"] for e in events if "recovery_s" in e]
        )
        if events
        else 0,
        "checkpoints": len(checkpoints),
        "checkpoints_missing": sorted(set(expected) - set(steps)),
        "checkpoints_corrupt": bad,
        "staging_left": staging,
        "ray_processes_left": left,
        "wall_s": round(time.time() - t0, 1),
        "events": events,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(json.dumps({k: v for k, v in report.items() if k != "events"}, indent=1))
    ok = (
        report["completed"]
        and not bad
        and not report["checkpoints_missing"]
        and not staging
        and not left
        and report["steps_lost_max"] <= args.every
    )
    print(f"chaos: {'PASS' if ok else 'FAIL'} (log: {workdir / 'driver.log'}, report: {out})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
