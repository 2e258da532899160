"""Replica failure under load: SIGKILL a model replica's process while a steady load runs.
Serve replaces it; the gateway retries what had produced no output, so requests do not
fail; a stream that had already sent tokens ends with an error event and [DONE]."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import Counter

import httpx
import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.full]

APP, PREFIX = "genai-failover", "/failover"
STREAMS = 8


def _model_replicas() -> dict[str, int]:
    """Replica actor name -> pid, for the live replicas of the models deployment."""
    from ray.util.state import list_actors

    actors = list_actors(
        filters=[("class_name", "=", f"ServeReplica:{APP}:models"), ("state", "=", "ALIVE")]
    )
    return {a.name: a.pid for a in actors}


def _running() -> int:
    from ray import serve

    status = serve.status().applications.get(APP)
    return 0 if status is None else status.deployments["models"].replica_states.get("RUNNING", 0)


def _stream(url: str, max_tokens: int, started: threading.Semaphore) -> str:
    """'ok', 'error-event' (ended with an error event, then [DONE]) or what went wrong."""
    body = {"prompt": "def ", "max_tokens": max_tokens, "stream": True}
    with (
        httpx.Client(base_url=url, timeout=120) as c,
        c.stream("POST", "/v1/completions", json=body) as r,
    ):
        if r.status_code != 200:
            return f"http-{r.status_code}"
        lines = []
        for line in r.iter_lines():
            if line.startswith("data: "):
                lines.append(line)
                if len(lines) == 1:
                    started.release()
    if not lines or lines[-1] != "data: [DONE]":
        return "cut"
    errors = [json.loads(x[6:]) for x in lines[:-1] if '"error"' in x]
    return "error-event" if errors else "ok"


def test_replica_killed_under_load_is_replaced_without_failed_requests(serve_url, zero3_checkpoint):
    from ray import serve

    from genai.serve.app import build_app
    from genai.serve.spec import ServeSpec

    spec = ServeSpec.model_validate(
        {
            "num_cpus": 0.5,
            "autoscaling": {"min_replicas": 2, "max_replicas": 2},
            "generation_log": {"mode": "off"},
        }
    )
    serve.run(build_app(spec, [zero3_checkpoint]), name=APP, route_prefix=PREFIX)
    url = f"{serve_url}{PREFIX}"
    outcomes: Counter[str] = Counter()
    problems: list[str] = []
    stop = threading.Event()

    def client() -> None:  # steady closed-loop load of plain completions
        with httpx.Client(base_url=url, timeout=120) as c:
            while not stop.is_set():
                try:
                    r = c.post("/v1/completions", json={"prompt": "x = ", "max_tokens": 8})
                    outcomes["ok" if r.status_code == 200 else f"http-{r.status_code}"] += 1
                    if r.status_code != 200:
                        problems.append(r.text[:300])
                except httpx.HTTPError as exc:
                    outcomes["exception"] += 1
                    problems.append(repr(exc))

    try:
        assert _running() == 2
        before = _model_replicas()
        assert len(before) == 2, before
        threads = [threading.Thread(target=client) for _ in range(6)]
        for t in threads:
            t.start()
        # long streams, decoding on both replicas when one is killed
        streams: list[str] = []
        started = threading.Semaphore(0)
        stream_threads = [
            threading.Thread(target=lambda: streams.append(_stream(url, 90, started)))
            for _ in range(STREAMS)
        ]
        time.sleep(3)
        for t in stream_threads:
            t.start()
        for _ in range(STREAMS):
            assert started.acquire(timeout=60)  # every stream has sent its first token
        # either replica: Serve spreads the streams over both (power of two choices)
        victim, pid = sorted(before.items())[0]
        killed_at = time.time()
        os.kill(pid, signal.SIGKILL)
        replaced = None
        while time.time() - killed_at < 120:
            now = _model_replicas()
            if victim not in now and len(now) == 2 and _running() == 2:
                replaced = time.time() - killed_at
                break
            time.sleep(0.2)
        time.sleep(3)  # load goes on against the new replica
        stop.set()
        for t in [*threads, *stream_threads]:
            t.join()
        total = sum(outcomes.values())
        rate = outcomes["ok"] / total
        print(
            f"failover: {total} requests, success {rate:.4%}, outcomes {dict(outcomes)}, "
            f"replacement {replaced if replaced is None else round(replaced, 1)} s, "
            f"streams {sorted(streams)}"
        )
        assert replaced is not None, "Serve did not replace the killed replica in 120 s"
        assert rate >= 0.999, (outcomes, problems[:3])
        assert total >= 100
        # no stream hangs or is cut: each ends with [DONE], an error event if its replica died
        assert len(streams) == STREAMS and set(streams) <= {"ok", "error-event"}, streams
        assert "error-event" in streams, streams  # some were on the killed replica
        health = httpx.get(f"{url}/healthz", timeout=30).json()
        assert health["status"] == "ok"
    finally:
        stop.set()
        serve.delete(APP)


def test_gateway_killed_under_load_loses_at_most_its_last_flush_of_log_records(
    serve_url, zero3_checkpoint, tmp_path
):
    """SIGKILL the gateway replica (the generation log's writer) under load: every request
    answered more than flush_s before the kill is in the log, read from its open stream
    file; the replacement gateway logs on."""
    from ray import serve
    from ray.util.state import list_actors

    from genai.serve import genlog
    from genai.serve.app import build_app
    from genai.serve.spec import ServeSpec

    flush_s = 0.5
    spec = ServeSpec.model_validate(
        {
            "num_cpus": 0.5,
            "autoscaling": {"min_replicas": 1, "max_replicas": 1},
            "generation_log": {"dir": str(tmp_path), "flush_s": flush_s, "rotate_s": 3600},
        }
    )
    app, prefix = "genai-genlog-kill", "/genlog-kill"
    serve.run(build_app(spec, [zero3_checkpoint]), name=app, route_prefix=prefix)
    url = f"{serve_url}{prefix}"
    answered: list[tuple[str, float]] = []  # (id, when the client had the answer)
    stop = threading.Event()

    def client() -> None:
        with httpx.Client(base_url=url, timeout=120) as c:
            while not stop.is_set():
                try:
                    r = c.post("/v1/completions", json={"prompt": "x = ", "max_tokens": 4})
                except httpx.HTTPError:
                    continue
                if r.status_code == 200:
                    answered.append((r.json()["id"], time.time()))

    def gateways() -> dict[str, int]:
        actors = list_actors(
            filters=[("class_name", "=", f"ServeReplica:{app}:gateway"), ("state", "=", "ALIVE")]
        )
        return {a.name: a.pid for a in actors}

    threads = [threading.Thread(target=client) for _ in range(4)]
    try:
        ((victim, pid),) = gateways().items()
        for t in threads:
            t.start()
        time.sleep(4)
        killed_at = time.time()
        os.kill(pid, signal.SIGKILL)
        deadline = time.time() + 120
        while time.time() < deadline and (victim in gateways() or not gateways()):
            time.sleep(0.2)
        time.sleep(3)  # the replacement gateway answers and logs
        stop.set()
        for t in threads:
            t.join()
        assert list(tmp_path.glob("generations-*.arrows")), "the killed gateway's open file"
        table, skipped = genlog.read(tmp_path)
        logged = set(table["id"].to_pylist())
        assert not skipped
        must = {i for i, t in answered if t < killed_at - flush_s - 0.5}
        after = {i for i, t in answered if t > killed_at + 1}
        lost = must - logged
        print(
            f"genlog kill: {len(answered)} answered, {len(must)} before the kill window, lost {len(lost)}"
        )
        assert len(must) >= 20 and not lost, sorted(lost)[:5]
        assert after, "no request answered by the replacement gateway"
    finally:
        stop.set()
        serve.delete(app)
