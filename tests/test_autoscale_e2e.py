"""Autoscaling, observed: under a bounded load the gateway scales from min_replicas up, and
back down after the load stops. Replica counts come from Serve's own status."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.full]

APP = "genai-autoscale"


def _running(app: str = APP) -> int:
    from ray import serve

    status = serve.status().applications.get(app)
    if status is None:
        return 0
    dep = status.deployments["models"]
    return dep.replica_states.get("RUNNING", 0)


def _wait(pred, timeout: float, timeline: list, t0: float) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        n = _running()
        if not timeline or timeline[-1][1] != n:
            timeline.append((round(time.time() - t0, 1), n))
        if pred(n):
            return True
        time.sleep(0.5)
    return False


def test_gateway_scales_up_under_load_and_back_down(serve_url, zero3_checkpoint):
    from ray import serve

    from genai.serve.app import build_app
    from genai.serve.spec import ServeSpec

    spec = ServeSpec.model_validate(
        {
            "autoscaling": {
                "min_replicas": 1,
                "max_replicas": 2,
                "target_ongoing_requests": 2,
                "upscale_delay_s": 1,
                "downscale_delay_s": 4,
                "look_back_period_s": 12,
            }
        }
    )
    # the mapping onto the models deployment's autoscaling_config is one to one
    app = build_app(spec, [zero3_checkpoint])
    models = app._bound_deployment.init_args[0]
    assert models._bound_deployment.name == "models"
    config = models._bound_deployment._deployment_config.autoscaling_config
    for key, value in spec.autoscaling.model_dump().items():
        assert getattr(config, key) == value, key
    serve.run(app, name=APP, route_prefix="/scale", blocking=False)
    timeline: list[tuple[float, int]] = []
    t0 = time.time()
    try:
        assert _wait(lambda n: n == 1, 120, timeline, t0), timeline
        stop = threading.Event()
        errors: list[str] = []

        def client() -> None:
            with httpx.Client(base_url=f"{serve_url}/scale", timeout=60) as c:
                while not stop.is_set():
                    r = c.post("/v1/completions", json={"prompt": "def ", "max_tokens": 48})
                    if r.status_code != 200:
                        errors.append(r.text[:200])

        threads = [threading.Thread(target=client) for _ in range(8)]
        load_at = round(time.time() - t0, 1)
        for t in threads:
            t.start()
        try:
            scaled_up = _wait(lambda n: n >= 2, 90, timeline, t0)
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=120)
        stopped_at = round(time.time() - t0, 1)
        assert scaled_up, f"never scaled up under load: {timeline}"
        assert _wait(lambda n: n == 1, 120, timeline, t0), f"never scaled down: {timeline}"
        print(f"load from {load_at}s to {stopped_at}s; replicas over time (s, n): {timeline}")
        assert not errors, errors[:3]
    finally:
        serve.delete(APP)
