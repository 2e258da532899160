"""Ray Tune sweeps whose trials are real Ray Train + DeepSpeed runs (CPU, gloo).

ASHA stopping trials early and promoting the best with its lineage (served over HTTP),
PBT exploiting another trial's checkpoint, a diverging trial reported as failed, and a
SIGKILLed sweep driver resumed without re-running finished trials.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest
import yaml

from genai import checkpoint as ckpt
from tests.conftest import TINY, merge
from tests.support import assert_self_contained

pytestmark = pytest.mark.e2e


def _write_sweep(
    tmp: Path, corpus_dir, cache_dir, sweep: dict, storage: str | None = "out", **base_over
) -> Path:
    """base.yaml + sweep.yaml in ``tmp``; ``storage=None`` keeps the default (runs/<name>,
    relative to the directory the sweep is run from)."""
    base = merge(
        TINY,
        {
            "name": "tiny-tune",
            "data": {"source": str(corpus_dir), "cache_dir": str(cache_dir)},
            "train": {"max_steps": 12, "eval_every": 4, "log_every": 2, "eval_batches": 2},
            "scaling": {"num_workers": 1},
            "deepspeed": {"precision": "auto"},  # fp32 on a CPU without native bf16: 70x faster
            "checkpoint": {"every_steps": 4, "keep": 3},
        },
    )
    (tmp / "base.yaml").write_text(yaml.safe_dump(merge(base, base_over)))
    path = tmp / "sweep.yaml"
    where = {"storage": str(tmp / storage)} if storage else {}
    path.write_text(yaml.safe_dump({"base": "base.yaml", **where, **sweep}))
    return path


def _run(path: Path, log: list[str] | None = None):
    from genai.tune.run import tune_sweep
    from genai.tune.spec import load_sweep

    lines = log if log is not None else []
    return tune_sweep(load_sweep(path), log=lines.append), lines


@pytest.fixture(scope="module")
def asha(ray_session, tmp_path_factory, corpus_dir, cache_dir):
    tmp = tmp_path_factory.mktemp("asha")
    path = _write_sweep(
        tmp,
        corpus_dir,
        cache_dir,
        {
            # the two good rates run first; the weak one meets their results at the first rung
            "space": {"train.lr": "grid([3e-3, 2e-3, 1e-5])"},
            "num_samples": 1,
            "scheduler": {"kind": "asha", "grace_period": 4, "reduction_factor": 2},
            "max_concurrent_trials": 2,
        },
    )
    result, log = _run(path)
    return result, log, tmp / "out"


def test_asha_sweep_stops_weak_trials_early_and_promotes_the_best(asha):
    result, log, out = asha
    rows = result.rows
    assert len(rows) == 3 and all(r.status != "ERROR" for r in rows), [r.reason for r in rows]
    stopped = [r for r in rows if r.status == "STOPPED"]
    done = [r for r in rows if r.status == "DONE"]
    assert stopped and all(r.steps < 12 for r in stopped)
    assert done and all(r.steps == 12 for r in done)
    # the weak learning rates are always cut short: they meet a better trial's result at the
    # first rung. (Which good rate goes on depends on which reached the rung first.)
    assert all(r.status == "STOPPED" and r.steps == 4 for r in rows if r.config["train.lr"] == 1e-5)
    assert result.best.config["train.lr"] in (3e-3, 2e-3) and result.best.status == "DONE"
    # the trial table, in the log and on disk
    assert any(line.startswith("trial ") and "status" in line for line in log)
    assert any(line.startswith("best checkpoint: ") for line in log)
    assert any(line.startswith("best config: ") for line in log)
    table = pq.read_table(out / "trials.parquet").to_pylist()
    assert sorted(r["trial_id"] for r in table) == sorted(r.trial_id for r in rows)
    assert {r["status"] for r in table} >= {"DONE", "STOPPED"}
    assert (out / "trials.csv").read_text().count("\n") == 4
    assert (out / "curves.png").stat().st_size > 10_000
    # Tune's own TensorBoard logger wrote events for every trial
    events = list((out / "tune").rglob("events.out.tfevents.*"))
    assert len({e.parent for e in events}) == 3


def test_promoted_checkpoint_is_a_self_contained_copy_with_lineage(asha):
    result, _, out = asha
    best = result.best_checkpoint
    assert best == out / "best" and not best.is_symlink()
    meta = ckpt.read_meta(best)
    lin = meta.lineage
    assert lin is not None and lin.sweep == "sweep" and lin.trial_id == result.best.trial_id
    assert lin.config == result.best.config and lin.metric == "val_bpb" and lin.mode == "min"
    assert lin.value == pytest.approx(meta.history[-1]["val_bpb"])
    assert len(lin.base_spec_hash) == 16 and lin.base_spec.endswith("base.yaml")
    # a copy: the trial's own checkpoints can be deleted and the promoted one still loads
    source = Path(lin.source)
    assert (
        source.is_dir()
        and os.stat(source / ckpt.WEIGHTS).st_ino != os.stat(best / ckpt.WEIGHTS).st_ino
    )
    assert_self_contained(best)


def test_promoted_checkpoint_served_shows_lineage(asha, serve_url):
    from ray import serve

    from genai.serve.app import build_app
    from genai.serve.spec import ServeSpec

    result, _, _ = asha
    serve.run(build_app(ServeSpec(), [result.best_checkpoint]), name="tuned", route_prefix="/")
    try:
        with httpx.Client(base_url=serve_url, timeout=60) as client:
            card = client.get("/v1/models").json()["data"][0]
            assert card["lineage"]["trial_id"] == result.best.trial_id
            assert card["lineage"]["config"] == {"train.lr": result.best.config["train.lr"]}
            r = client.post("/v1/completions", json={"prompt": "def ", "max_tokens": 4, "seed": 1})
            assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] >= 1
    finally:
        serve.delete("tuned")


@pytest.mark.full
def test_pbt_exploit_continues_from_another_trials_checkpoint(
    ray_session, tmp_path, corpus_dir, cache_dir
):
    from genai.train.engine import lr_lambda

    path = _write_sweep(
        tmp_path,
        corpus_dir,
        cache_dir,
        {
            "space": {"train.lr": "choice([3e-3, 1e-5])"},
            "num_samples": 2,
            "seed": 1,
            "scheduler": {
                "kind": "pbt",
                "perturbation_interval": 4,
                "quantile_fraction": 0.5,
                "resample_probability": 0.0,
                # asynchronous PBT with two trials exploits only if the weaker one reaches
                # step 4 first (the first to arrive is alone in the population and is not
                # recorded as a donor); CI saw the other order. Synchronous is deterministic.
                "synch": True,
            },
            "max_concurrent_trials": 2,
        },
        # two segments: the exploit at step 4, then the exploited trial goes on to step 8
        train={"max_steps": 8},
    )
    result, _ = _run(path)
    rows = result.rows
    assert len(rows) == 2 and all(r.status == "DONE" and r.steps == 8 for r in rows)
    # PBT's own record of each exploit: [target tag, donor tag, iterations, old, new config]
    experiment = tmp_path / "out" / "tune" / "sweep"
    exploits = [json.loads(x) for x in (experiment / "pbt_global.txt").read_text().splitlines()]
    assert exploits, "PBT never exploited"
    metas = {
        r.trial_id: ckpt.read_meta(ckpt.find_latest(tmp_path / "out" / "trials" / r.trial_id))
        for r in rows
    }
    assert all(m.step == 8 and [h["step"] for h in m.history] == [0, 4, 8] for m in metas.values())
    # the exploited trial's checkpoints continue the donor's: its history holds the donor's
    # evaluation at the exploit step (the weights it continued from), then goes on to step 8
    ma, mb = metas.values()
    shared = [
        h["step"] for h, g in zip(ma.history, mb.history, strict=True) if h == g and h["step"] > 0
    ]
    assert shared, "no trial continued from the other's checkpoint"
    # ...with the perturbed learning rate of PBT's new config, not the donor's
    from genai.config import TrainSpec

    new_lrs = {e[5]["train.lr"] for e in exploits}
    exploited = [m for m in metas.values() if m.spec["train"]["lr"] in new_lrs]
    assert exploited
    for m in exploited:
        factor = lr_lambda(TrainSpec(**m.spec["train"]))(8)
        assert m.metrics["lr"] == pytest.approx(m.spec["train"]["lr"] * factor, rel=1e-5)


@pytest.mark.full
def test_diverging_trial_is_listed_as_failed_and_the_sweep_goes_on(
    ray_session, tmp_path, corpus_dir, cache_dir
):
    # weight decay of 1e7 at lr 1e-2 multiplies weights by about -1e5 a step: inf within 12
    # steps. (ZeRO 1-3 would skip steps whose gradients overflow; ZeRO-0 fp32 does not.)
    path = _write_sweep(
        tmp_path,
        corpus_dir,
        cache_dir,
        {
            "space": {"train.weight_decay": "grid([0.1, 1e7])"},
            "scheduler": {"kind": "none"},
            "num_samples": 1,
            "max_concurrent_trials": 2,
        },
        # a deterministic failure: Ray Train's restarts (train.max_failures) would only repeat it
        train={"lr": 1e-2, "max_failures": 0},
        deepspeed={"precision": "fp32", "zero_stage": 0},
    )
    result, _ = _run(path)
    by_wd = {r.config["train.weight_decay"]: r for r in result.rows}
    assert by_wd[1e7].status == "ERROR" and "TrainingDiverged" in by_wd[1e7].reason
    assert re.search(r"is (nan|inf)", by_wd[1e7].reason)
    assert by_wd[0.1].status == "DONE" and result.best.trial_id == by_wd[0.1].trial_id


@pytest.mark.full
def test_a_sweep_whose_every_trial_fails_exits_with_one_clear_line(tmp_path, corpus_dir, cache_dir):
    path = _write_sweep(
        tmp_path,
        corpus_dir,
        cache_dir,
        {"space": {"train.micro_batch_size": "grid([100000])"}, "scheduler": {"kind": "none"}},
        train={"max_failures": 0},
    )
    r = subprocess.run(
        [sys.executable, "-m", "genai.cli", "tune", str(path)],
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert r.returncode == 1, r.stderr[-2000:]
    last = r.stderr.strip().splitlines()[-1]
    assert (
        last.startswith("genai: error: every trial of sweep 'sweep' failed")
        and "training items" in last
    )


@pytest.mark.full
def test_sigkilled_sweep_driver_resumes_without_rerunning_finished_trials(
    tmp_path, corpus_dir, cache_dir
):
    _write_sweep(
        tmp_path,
        corpus_dir,
        cache_dir,
        {
            # two trials, one at a time: one finished and one mid-way when the driver dies
            "space": {"train.lr": "grid([3e-3, 1e-3])"},
            "scheduler": {"kind": "none"},
            "max_concurrent_trials": 1,
        },
        storage=None,
    )
    # run as the README does: from the project directory, the default relative storage
    # (runs/sweep); trials must commit there, not under Tune's per-trial working directory
    storage = tmp_path / "runs" / "sweep"
    trials = storage / "trials"
    cmd = [sys.executable, "-m", "genai.cli", "tune", "sweep.yaml"]
    log = (tmp_path / "first.log").open("w")
    proc = subprocess.Popen(
        cmd, start_new_session=True, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path
    )

    def finished() -> list[Path]:
        return [d for d in trials.glob("*_*") if (d / "step-000012").is_dir()]

    def partial() -> list[Path]:
        return [
            d
            for d in trials.glob("*_*")
            if ckpt.find_latest(d) and not (d / "step-000012").is_dir()
        ]

    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not (finished() and partial()):
        time.sleep(0.2)
    try:
        tail = (tmp_path / "first.log").read_text()[-3000:]
        assert finished() and partial(), f"never saw one finished trial and one mid-way: {tail}"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    time.sleep(3)
    done_before = {d.name: os.stat(d / "step-000012").st_ino for d in finished()}
    mid = {d.name: ckpt.read_meta(ckpt.find_latest(d)).step for d in partial()}

    r = subprocess.run(
        [*cmd, "--resume"], capture_output=True, text=True, timeout=600, cwd=tmp_path
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = r.stdout + r.stderr
    for (
        trial_id
    ) in done_before:  # finished trials are not started again, their checkpoints untouched
        assert f"trial {trial_id} started" not in out
        assert os.stat(trials / trial_id / "step-000012").st_ino == done_before[trial_id]
    for trial_id, step in mid.items():  # the unfinished one continues from its last checkpoint
        assert re.search(rf"resumed from .*{trial_id}.*at step {step}", out), out[-3000:]
    table = pq.read_table(storage / "trials.parquet").to_pylist()
    assert len(table) == 2 and all(t["status"] == "DONE" and t["steps"] == 12 for t in table)
    print({"finished_before_kill": done_before, "resumed_at": mid})
