"""A family from outside genai (tests/plugins/mog, installed by ``make install``) through the
whole stack: found through the ``genai.families`` entry point, trained on Ray Train +
DeepSpeed, swept by Tune, served on a route of its own with a metric and a log record."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import httpx
import pytest
import yaml

from genai import checkpoint as ckpt
from tests.conftest import ROOT

pytestmark = pytest.mark.e2e

MOG = {
    "name": "tiny-mog",
    "model": {"family": "mog", "components": 8},
    "data": {"kind": "mixture2d", "n_train": 2048, "n_val": 512},
    "train": {
        "max_steps": 24,
        "micro_batch_size": 64,
        "lr": 0.2,
        "warmup_steps": 1,
        "log_every": 8,
        "eval_every": 8,
    },
    "deepspeed": {"zero_stage": 3, "precision": "fp32"},
    "scaling": {"num_workers": 2},
    "checkpoint": {"every_steps": 12, "keep": 2},
}


def test_the_family_comes_from_the_entry_point_and_genai_never_names_it():
    from genai.families import FAMILIES

    family = FAMILIES["mog"]
    assert type(family).__module__ == "genai.families.base"
    assert family.task.startswith("genai_mog.") and family.routes[0].path == "/v1/mog/samples"
    named = subprocess.run(
        ["grep", "-rlI", "-e", "genai_mog", "-e", "mixture2d", str(ROOT / "genai")],
        capture_output=True,
        text=True,
    )
    assert named.returncode == 1 and not named.stdout, named.stdout


@pytest.fixture(scope="module")
def trained(ray_session, tmp_path_factory) -> Path:
    from genai.config import parse_job
    from genai.train.run import train

    tmp = tmp_path_factory.mktemp("mog")
    raw = {**MOG, "checkpoint": {**MOG["checkpoint"], "dir": str(tmp / "ckpt")}}
    return train(parse_job(raw))


def test_trains_under_zero3_toward_the_true_likelihood(trained):
    meta = ckpt.read_meta(trained)
    assert meta.family == "mog" and meta.step == 24
    assert meta.deepspeed_config["mixture"]["zero_optimization"]["stage"] == 3
    first, last = meta.history[0], meta.history[-1]
    assert last["val_nll"] < first["val_nll"] and last["val_nll"] > last["true_nll"] - 0.5
    assert meta.metrics["points_per_s"] > 0
    assert meta.export["model_config"] == {"components": 8}
    assert "samples.png" in meta.pictures and (trained / "samples.png").stat().st_size > 500
    assert (trained / ckpt.WEIGHTS).is_file()


@pytest.fixture(scope="module")
def swept(ray_session, tmp_path_factory):
    from genai.tune.run import tune_sweep
    from genai.tune.spec import load_sweep

    tmp = tmp_path_factory.mktemp("mog-sweep")
    base = {**MOG, "train": {**MOG["train"], "max_steps": 8, "eval_every": 4}}
    base = {
        **base,
        "scaling": {"num_workers": 1},
        "deepspeed": {"zero_stage": 1, "precision": "fp32"},
    }
    (tmp / "base.yaml").write_text(yaml.safe_dump(base))
    sweep = {
        "base": "base.yaml",
        "storage": str(tmp / "out"),
        "space": {"train.lr": "grid([0.2, 0.0001])"},
        "max_concurrent_trials": 2,
    }
    (tmp / "sweep.yaml").write_text(yaml.safe_dump(sweep))
    return tune_sweep(load_sweep(tmp / "sweep.yaml"), log=lambda _: None)


@pytest.mark.full
def test_a_sweep_of_two_trials_promotes_by_the_familys_objective(swept):
    rows = swept.rows
    assert len(rows) == 2 and all(r.status == "DONE" and r.steps == 8 for r in rows)
    assert swept.best.config["train.lr"] == 0.2
    lin = ckpt.read_meta(swept.best_checkpoint).lineage
    assert lin is not None and lin.metric == "val_nll" and lin.mode == "min"
    assert lin.trial_id == swept.best.trial_id


@pytest.fixture(scope="module")
def served(serve_url, trained, tmp_path_factory):
    from ray import serve

    from genai.serve.app import build_app
    from genai.serve.spec import ServeSpec

    logs = tmp_path_factory.mktemp("mog-log")
    spec = ServeSpec(
        mog={"max_points": 256}, generation_log={"dir": str(logs), "flush_s": 0.2, "rotate_s": 1}
    )
    serve.run(
        build_app(spec, [trained]),
        name="genai-mog",
        route_prefix="/",
        blocking=False,
    )
    client = httpx.Client(base_url=serve_url, timeout=60)
    yield client, logs
    client.close()
    serve.delete("genai-mog")


def test_served_on_its_own_route_with_a_card_a_metric_and_a_log_record(served):
    import ray

    from genai.serve import genlog

    client, logs = served
    cards = {m["id"]: m for m in client.get("/v1/models").json()["data"]}
    assert cards["tiny-mog"]["family"] == "mog" and cards["tiny-mog"]["components"] == 8
    body = {"model": "tiny-mog", "n": 200, "seed": 3}
    r = client.post("/v1/mog/samples", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["id"].startswith("mog-") and out["object"] == "mog.samples"
    assert len(out["data"]) == 200 and all(len(p) == 2 for p in out["data"])
    assert client.post("/v1/mog/samples", json=body).json()["data"] == out["data"]  # seeded
    # the points lie on the ring the model was trained on (radius 2)
    radii = sorted((x * x + y * y) ** 0.5 for x, y in out["data"])
    assert 1.5 < radii[len(radii) // 2] < 2.5
    # bad input: the field is named, from the request model and from the serve spec's cap
    for bad, field in (({"n": "5"}, "n"), ({"model": "tiny-mog", "n": 1000}, "n")):
        r = client.post("/v1/mog/samples", json=bad)
        assert r.status_code == 422 and r.json()["error"]["param"] == field, r.text
    # the family's metric reaches Ray's export
    port = ray._private.worker.global_worker.node.metrics_export_port
    deadline = time.time() + 60
    while "genai_mog_points_total{" not in (text := _scrape(port)) or "tiny-mog" not in text:
        assert time.time() < deadline, "no genai_mog_points_total in Ray's metrics export"
        time.sleep(1)
    # the generation log has the request, with the family's typed column
    deadline = time.time() + 30
    while True:
        table, _ = genlog.read(logs)
        rows = {row["id"]: row for row in table.to_pylist()}
        if out["id"] in rows or time.time() > deadline:
            break
        time.sleep(0.3)
    row = rows[out["id"]]
    assert row["route"] == "/v1/mog/samples" and row["model"] == "tiny-mog"
    assert row["n_points"] == 200 and table.schema.field("n_points").type == "int64"


def _scrape(port: int) -> str:
    return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
