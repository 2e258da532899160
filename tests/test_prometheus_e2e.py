"""A real Prometheus (Debian's package) scrapes Ray's metrics export through Ray's
service-discovery file, as infra/prometheus.yml says, while a VAE trains and the gateway
serves: every genai metric answers PromQL, and every Grafana panel returns data."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest
import yaml

from genai import checkpoint as ckpt
from genai.cluster import free_port
from tests.test_images_e2e import VAE, _spec

pytestmark = [pytest.mark.e2e, pytest.mark.full]

ROOT = Path(__file__).resolve().parent.parent
APP, PREFIX = "genai-prom", "/prom"

# every genai metric (README: "Metrics"), with a label that must be on it
METRICS = {
    "ray_genai_requests_total": "status",
    "ray_genai_request_latency_s_bucket": "route",
    "ray_genai_tokens_total": "kind",
    "ray_genai_images_total": "route",
    "ray_genai_decode_batch_size_bucket": "model",
    "ray_genai_decode_active": "model",
    "ray_genai_decode_queued": "model",
    "ray_genai_model_step": "model",
    "ray_genai_checkpoint_swaps_total": "result",
    "ray_serve_deployment_replica_healthy": "deployment",
    "ray_genai_train_step": "run",
    "ray_genai_train_loss": "name",
    "ray_genai_train_learning_rate": "run",
    "ray_genai_train_items_per_second": "unit",
    "ray_genai_train_eval": "name",
}


@pytest.fixture(scope="module")
def prometheus(ray_session, tmp_path_factory):
    binary = shutil.which("prometheus")
    if binary is None:
        if os.environ.get("GENAI_REQUIRE_PROMETHEUS"):
            pytest.fail("prometheus is not installed (.ci/run installs Debian's package)")
        pytest.skip("prometheus is not installed: apt-get install prometheus")
    import ray

    tmp = tmp_path_factory.mktemp("prometheus")
    config = yaml.safe_load((ROOT / "infra/prometheus.yml").read_text())
    sd_file = Path(ray._private.worker.global_worker.node.get_temp_dir_path()) / (
        "prom_metrics_service_discovery.json"
    )
    # the shipped config reads Ray's own service-discovery file; only the interval changes
    assert config["scrape_configs"][0]["file_sd_configs"][0]["files"] == [str(sd_file)]
    assert sd_file.is_file()
    config["global"]["scrape_interval"] = "1s"
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={tmp / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(tmp / "prometheus.log").open("w"),
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if httpx.get(f"{url}/-/ready", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail((tmp / "prometheus.log").read_text()[-2000:])
    yield url
    proc.terminate()
    proc.wait(timeout=30)


def _query(url: str, expr: str, **range_: float) -> list[dict]:
    path, params = "/api/v1/query", {"query": expr}
    if range_:
        path, params = "/api/v1/query_range", {**params, **range_, "step": 1}
    r = httpx.get(f"{url}{path}", params=params, timeout=30)
    assert r.status_code == 200, (expr, r.text[:500])
    return r.json()["data"]["result"]


def _has_data(result: list[dict]) -> bool:
    values = [v for s in result for _, v in s.get("values", [s.get("value", [0, "NaN"])])]
    return any(v not in ("NaN", "+Inf", "-Inf") for v in values)


def _panels() -> list[tuple[str, str, str]]:
    out = []
    for board in sorted((ROOT / "infra/grafana").glob("*.json")):
        for panel in json.loads(board.read_text())["panels"]:
            for target in panel["targets"]:
                out.append((board.name, panel["title"], target["expr"]))
    return out


def test_prometheus_scrapes_training_and_serving_and_every_panel_has_data(
    prometheus, serve_url, zero3_checkpoint, tmp_path, cache_dir
):
    from ray import serve

    from genai.config import parse_job
    from genai.serve.app import build_app
    from genai.serve.spec import ServeSpec
    from genai.train.run import train

    t_start = time.time()
    # 1. a VAE trains while Prometheus scrapes (long enough for several metric reports)
    raw = _spec(VAE, tmp_path, cache_dir)
    raw = {
        **raw,
        "name": "prom-vae",
        # each logged step is a ray.train.report (about a second each here): few of them
        "train": {**raw["train"], "max_steps": 120, "log_every": 20, "eval_every": 60},
        "scaling": {"num_workers": 1},
        "checkpoint": {**raw["checkpoint"], "every_steps": 0},
    }
    vae = train(parse_job(raw))
    root = vae.parent
    print(f"prom: trained in {time.time() - t_start:.1f} s")

    # 2. the gateway serves the LM and that VAE, watching for new checkpoints
    spec = ServeSpec.model_validate(
        {"watch": True, "watch_interval_s": 0.5, "generation_log": {"mode": "off"}}
    )
    serve.run(build_app(spec, [zero3_checkpoint, root / "latest"]), name=APP, route_prefix=PREFIX)
    url = f"{serve_url}{PREFIX}"
    print(f"prom: serving at {time.time() - t_start:.1f} s")
    try:
        with httpx.Client(base_url=url, timeout=60) as c:
            # scrape-to-query latency: one request, then poll PromQL until it is counted
            count = 'sum(ray_genai_requests_total{route="/v1/completions"}) or vector(0)'
            c.post("/v1/completions", json={"prompt": "x", "max_tokens": 2})  # series exists
            time.sleep(6)
            before = float(_query(prometheus, count)[0]["value"][1])
            t0 = time.time()
            assert (
                c.post("/v1/completions", json={"prompt": "x", "max_tokens": 2}).status_code == 200
            )
            while float(_query(prometheus, count)[0]["value"][1]) <= before:
                assert time.time() - t0 < 60, "the request never reached Prometheus"
                time.sleep(0.1)
            latency = time.time() - t0

            # 3. steady mixed load for a while: completions (some streamed), images, a 404
            stop = threading.Event()

            def client(i: int) -> None:
                with httpx.Client(base_url=url, timeout=60) as cc:
                    while not stop.is_set():
                        cc.post(
                            "/v1/completions",
                            json={"prompt": "def ", "max_tokens": 16, "stream": i == 0},
                        )
                        cc.post("/v1/images/generations", json={"model": "prom-vae", "n": 2})
                        cc.post("/v1/completions", json={"model": "nope", "prompt": "x"})

            threads = [threading.Thread(target=client, args=(i,)) for i in range(6)]
            for t in threads:
                t.start()
            time.sleep(4)
            # a new VAE step is swapped in under load (the swaps counter)
            staging = root / ".step-999999.tmp-prom"
            shutil.copytree(vae, staging)
            meta = ckpt.read_meta(staging)
            ckpt.write_meta(staging, meta.model_copy(update={"step": 999999}))
            ckpt.commit(staging, root, 999999, keep=5)
            time.sleep(8)
            stop.set()
            for t in threads:
                t.join()
            steps = {m["id"]: m["step"] for m in c.get("/v1/models").json()["data"]}
            assert steps["prom-vae"] == 999999
        time.sleep(6)  # the last reports: metrics push + one scrape
        window = {"start": t_start, "end": time.time()}

        missing = []
        for name, label in METRICS.items():
            result = _query(prometheus, f"max_over_time({name}[15m])")
            if not result or not any(label in s["metric"] for s in result):
                missing.append(name)
        assert not missing, f"not in Prometheus: {missing}"

        dead = [
            f"{board}: {title}"
            for board, title, expr in _panels()
            if not _has_data(_query(prometheus, expr.replace("$__rate_interval", "30s"), **window))
        ]
        assert not dead, f"dashboard panels without data: {dead}"
        assert len(_panels()) >= 19
        print(f"scrape-to-query latency: {latency:.1f} s")
    finally:
        serve.delete(APP)
