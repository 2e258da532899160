"""Hot swap: a new checkpoint replaces a served one with no restart and no failed request
(a moved ``latest`` link, an edited serve config); bad checkpoints are refused and the
old one serves on."""

from __future__ import annotations

import shutil
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from genai.checkpoint import WEIGHTS, commit, read_meta, write_meta

pytestmark = pytest.mark.e2e

APP, PREFIX = "genai-hotswap", "/swap"


def _publish(src: Path, root: Path, step: int, family: str | None = None, corrupt: bool = False):
    """What training does: a complete copy in a staging dir, committed, `latest` moved."""
    staging = root / f".step-{step:06d}.tmp-test"
    shutil.copytree(src, staging)
    meta = read_meta(staging)
    write_meta(staging, meta.model_copy(update={"step": step, "family": family or meta.family}))
    if corrupt:
        data = (staging / WEIGHTS).read_bytes()
        (staging / WEIGHTS).write_bytes(data[: len(data) // 3])
    return commit(staging, root, step, keep=10)


class Load:
    """Closed-loop clients that record every status until stopped."""

    def __init__(self, url: str, clients: int = 4) -> None:
        self.url, self.stop, self.statuses = url, threading.Event(), Counter()
        self.failures: list[str] = []
        self.threads = [threading.Thread(target=self._client, args=(i,)) for i in range(clients)]

    def _client(self, i: int) -> None:
        with httpx.Client(base_url=self.url, timeout=60) as c:
            while not self.stop.is_set():
                stream = i % 2 == 1  # half streamed: a swap must not cut a stream either
                body = {"prompt": "def f", "max_tokens": 12, "stream": stream}
                try:
                    r = c.post("/v1/completions", json=body)
                    ok = r.status_code == 200 and (not stream or "[DONE]" in r.text)
                    self.statuses[r.status_code if ok else f"bad-{r.status_code}"] += 1
                    if not ok:
                        self.failures.append(r.text[:300])
                except httpx.HTTPError as exc:
                    self.statuses["error"] += 1
                    self.failures.append(repr(exc))

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join()


def _served(c: httpx.Client) -> dict:
    health = c.get("/healthz").json()
    steps = {m["id"]: m["step"] for m in c.get("/v1/models").json()["data"]}
    return {"steps": steps, **health}


def _until(c: httpx.Client, pred, timeout: float = 60) -> tuple[dict, float]:
    t0 = time.perf_counter()
    while True:
        state = _served(c)
        if pred(state) or time.perf_counter() - t0 > timeout:
            return state, time.perf_counter() - t0
        time.sleep(0.2)


def test_hot_swap_under_load_loses_nothing_and_refuses_bad_checkpoints(
    serve_url, zero3_checkpoint, tmp_path
):
    from ray import serve

    from genai.serve.app import build_app
    from genai.serve.spec import ServeSpec

    name = read_meta(zero3_checkpoint).name
    root = tmp_path / "ckpts"
    root.mkdir()
    _publish(zero3_checkpoint, root, 1)
    other = tmp_path / "other"
    other.mkdir()
    _publish(zero3_checkpoint, other, 50)
    config = tmp_path / "serve.yaml"
    config.write_text(f"checkpoints: [{root / 'latest'}]\n")

    spec = ServeSpec.model_validate(
        {"watch": True, "watch_interval_s": 0.3, "autoscaling": {"max_replicas": 1}}
    )
    serve.run(
        build_app(spec, [root / "latest"], config_file=str(config)),
        name=APP,
        route_prefix=PREFIX,
    )
    url = f"{serve_url}{PREFIX}"
    report: dict[str, object] = {}
    try:
        with httpx.Client(base_url=url, timeout=30) as c, Load(url) as load:
            replica = _served(c)["replica"]
            assert _served(c)["steps"] == {name: 1}
            time.sleep(1.5)  # load running before the first swap

            # 1. training commits a new step: `latest` moves, the replica swaps it in
            _publish(zero3_checkpoint, root, 2)
            state, took = _until(c, lambda s: s["steps"][name] == 2)
            assert state["steps"][name] == 2, state
            report["swap_s"] = round(took, 2)
            time.sleep(1.5)

            # 2. a corrupt checkpoint and one of another family: refused, step 2 serves on
            for step, kwargs in ((3, {"corrupt": True}), (4, {"family": "vae"})):
                bad = _publish(zero3_checkpoint, root, step, **kwargs)
                state, _ = _until(c, lambda s, b=bad: str(b.resolve()) in s["refused"], timeout=30)
                assert str(bad.resolve()) in state["refused"], state
                assert state["steps"][name] == 2, state
            assert "SafetensorError" in state["refused"][str((root / "step-000003").resolve())] or (
                "safetensors" in state["refused"][str((root / "step-000003").resolve())].lower()
            ), state["refused"]
            assert "vae" in state["refused"][str((root / "step-000004").resolve())], state[
                "refused"
            ]

            # 3. the serve config now lists another checkpoint dir: applied in place
            config.write_text(f"checkpoints: [{other / 'latest'}]\n")
            state, took = _until(c, lambda s: s["steps"][name] == 50)
            assert state["steps"][name] == 50, state
            report["config_swap_s"] = round(took, 2)
            time.sleep(1.5)  # requests keep flowing on the new model

            assert _served(c)["replica"] == replica, "the replica was restarted"
            events = [e["event"] for e in _served(c)["events"]]
            assert events.count("swapped") == 2 and events.count("refused") >= 2, events
        report["requests"] = dict(load.statuses)
        print("hot swap:", report)
        assert not load.failures, (load.failures[:3], load.statuses)
        assert load.statuses[200] >= 20, load.statuses  # the load really ran through it
    finally:
        serve.delete(APP)
