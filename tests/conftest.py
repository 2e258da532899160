"""Shared fixtures: one embedded Ray for the session, a tiny local corpus, tiny specs.

Everything is real: a local Ray instance, DeepSpeed on the CPU (gloo), Ray Serve
over HTTP. Models are tiny (2 layers, width 32) so a run takes seconds.
"""

from __future__ import annotations

import copy
import os
import shutil
import sysconfig
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray instance shared by every test that needs it.

    4 logical CPUs on a 2-core machine: a Serve app (0.6 CPU) stays up while 2-worker
    training runs; the work itself is small.
    """
    from genai import cluster

    # metrics reach Ray's export every 2 s instead of 10 (the Prometheus test waits on them)
    os.environ.setdefault("RAY_metrics_report_interval_ms", "2000")
    with cluster.connect(num_cpus=4):
        yield


@pytest.fixture(scope="session")
def ray_address(ray_session) -> str:
    """The session Ray's GCS address: CLI tests join it with --address instead of starting
    an embedded Ray of their own (unless the embedded start is what they test)."""
    import ray

    return ray.get_runtime_context().gcs_address


@pytest.fixture(scope="session")
def serve_url(ray_session):
    """Ray Serve's HTTP proxy, started once: its port cannot change while Serve runs."""
    from ray import serve

    from genai.cluster import free_port

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    yield f"http://127.0.0.1:{port}"
    serve.shutdown()


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory) -> Path:
    """A small code corpus: a few standard-library packages copied to a local dir."""
    src = Path(sysconfig.get_paths()["stdlib"])
    out = tmp_path_factory.mktemp("corpus")
    for pkg in ("json", "email", "logging"):
        for f in sorted((src / pkg).glob("*.py")):
            shutil.copy(f, out / f"{pkg}_{f.name}")
    return out


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("genai_cache")


TINY: dict[str, Any] = {
    "name": "tiny",
    "model": {"n_layer": 2, "n_embd": 32, "n_head": 2, "max_position": 96},
    "data": {
        "include": ["*.py"],
        "seq_len": 32,
        "max_bytes": 300_000,
        "tokenizer": {"vocab_size": 400},
    },
    "train": {
        "max_steps": 6,
        "micro_batch_size": 4,
        "lr": 3e-3,
        "warmup_steps": 1,
        "log_every": 2,
        "eval_every": 3,
        "eval_batches": 2,
    },
    "deepspeed": {"zero_stage": 2, "precision": "bf16"},
    "scaling": {"num_workers": 2},
    "checkpoint": {"every_steps": 3, "keep": 2},
}


def merge(base: dict, over: dict) -> dict:
    """``over`` laid on a copy of ``base`` (tests change what they get; TINY stays as it is)."""
    from genai.specio import deep_merge

    return deep_merge(copy.deepcopy(base), over)


@pytest.fixture
def tiny_raw(tmp_path, corpus_dir, cache_dir):
    """Factory: a tiny job spec dict with local data and a per-test checkpoint dir."""

    def make(**over: Any) -> dict:
        raw = merge(TINY, {"data": {"source": str(corpus_dir), "cache_dir": str(cache_dir)}})
        raw = merge(raw, {"checkpoint": {"dir": str(tmp_path / "ckpt")}})
        return merge(raw, over)

    return make


@pytest.fixture(scope="session")
def zero3_checkpoint(ray_session, tmp_path_factory, corpus_dir, cache_dir) -> Path:
    """A checkpoint from a real 2-worker ZeRO-3 run (shared by the serving tests)."""
    from genai.config import parse_job
    from genai.train.run import train

    # trained on its whole context: the server offers what training covered (96 positions)
    raw = merge(TINY, {"name": "tiny-z3", "deepspeed": {"zero_stage": 3}, "data": {"seq_len": 96}})
    raw = merge(raw, {"data": {"source": str(corpus_dir), "cache_dir": str(cache_dir)}})
    raw = merge(raw, {"checkpoint": {"dir": str(tmp_path_factory.mktemp("z3") / "ckpt")}})
    return train(parse_job(raw))


@pytest.fixture
def browser():
    """Debian's chromium, headless, driven by selenium (skipped where it is not installed,
    failed where CI installed it)."""
    chromium, driver_bin = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver_bin):
        if os.environ.get("GENAI_REQUIRE_BROWSER"):
            pytest.fail("chromium/chromium-driver are not installed (.ci/run installs them)")
        pytest.skip("no browser: apt-get install chromium chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1280,900",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(driver_bin), options=options)
    yield driver
    driver.quit()


def _ray_leftovers() -> list[str]:
    """Ray processes in this test session's process session (the embedded instance, and
    anything a test started without a session of its own), other than pytest itself."""
    from genai.testing.localcluster import session_pids

    me, found = os.getpid(), []
    for pid in session_pids(os.getsid(0)):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if pid != me and ("/ray/" in cmd or cmd.startswith(("ray::", "ray-dashboard"))):
            found.append(f"{pid} {cmd[:120]}")
    return found


def pytest_sessionfinish(session, exitstatus):
    """The suite leaves no Ray process behind: the session fixtures have shut Ray down by
    now; what is still running after a grace period fails the run. (Multi-node test
    clusters run in sessions of their own; their fixture checks those.)"""
    import time

    deadline = time.time() + 20
    while (left := _ray_leftovers()) and time.time() < deadline:
        time.sleep(0.5)
    if left:
        print("\nRay processes left behind by the test suite:\n  " + "\n  ".join(left))
        session.exitstatus = 1
    elif exitstatus == 0:
        print("\nno Ray process left behind")
