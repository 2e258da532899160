"""Automatic recovery: a training worker SIGKILLed mid-run. Ray Train restarts the worker
group (train.max_failures) and the run continues from its latest committed checkpoint with
no user action: steps and validation history go on, no staging debris is left. For the LM
and for the GAN's two engines."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from genai import checkpoint as ckpt
from genai.config import parse_job
from tests.conftest import merge
from tests.test_images_e2e import GAN, _spec

pytestmark = [pytest.mark.e2e, pytest.mark.full]


def _train_workers() -> list[int]:
    from ray.util.state import list_actors

    actors = list_actors(filters=[("state", "=", "ALIVE")], limit=1000)
    return sorted(a.pid for a in actors if "RayTrainWorker" in a.class_name)


def _run_and_kill_a_worker(raw: dict) -> tuple[Path, int, dict]:
    from genai.train.run import train

    spec = parse_job(raw)
    root = spec.checkpoint_dir
    result: dict = {}

    def run() -> None:
        try:
            result["final"] = train(spec)
        except BaseException as exc:  # reported by the test
            result["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.time() + 300
    while ckpt.find_latest(root) is None and time.time() < deadline and thread.is_alive():
        time.sleep(0.2)
    first = ckpt.find_latest(root)
    assert first is not None, result
    killed_after = ckpt.read_meta(first).step
    pids = _train_workers()
    assert pids, "no Ray Train worker to kill"
    os.kill(pids[-1], signal.SIGKILL)
    thread.join(timeout=600)
    assert not thread.is_alive() and "error" not in result, result
    return root, killed_after, result


@pytest.mark.parametrize("family", ["lm", "gan"])
def test_a_killed_worker_is_recovered_from_the_latest_checkpoint(
    family, ray_session, tiny_raw, tmp_path, cache_dir, capfd
):
    if family == "lm":
        raw = tiny_raw(
            name="recover-lm",
            train={"max_steps": 40, "log_every": 5, "eval_every": 20},
            checkpoint={"every_steps": 5, "keep": 20},
        )
    else:
        raw = merge(
            _spec(GAN, tmp_path, cache_dir),
            {
                "name": "recover-gan",
                "train": {"max_steps": 40, "log_every": 5, "eval_every": 20},
                "checkpoint": {"every_steps": 5, "keep": 20},
            },
        )
    root, killed_after, _ = _run_and_kill_a_worker(raw)

    checkpoints = ckpt.list_checkpoints(root)
    metas = [ckpt.read_meta(p) for p in checkpoints]
    final = metas[-1]
    assert final.step == 40
    assert len({m.run_id for m in metas}) == 1  # one run, recovered in place: no --resume
    # the history goes on: evaluations at 0, 20 and 40, each once
    assert [h["step"] for h in final.history] == [0, 20, 40]
    # steps lost to the failure are at most one checkpoint interval: every step's checkpoint exists
    assert [m.step for m in metas] == list(range(5, 41, 5)), [m.step for m in metas]
    assert killed_after < 40
    assert not [p for p in root.iterdir() if p.name.startswith((".step-", ".trash-"))]
    out = capfd.readouterr()
    assert "recovered from a failure: continuing from" in out.out + out.err
    if family == "gan":  # both engines continued to the same step
        for engine in ("generator", "discriminator"):
            tag = (checkpoints[-1] / "deepspeed" / engine / "latest").read_text().strip()
            assert tag == ckpt.step_name(40)
