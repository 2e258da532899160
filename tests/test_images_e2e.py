"""GAN and VAE through the real stack: Ray Train + DeepSpeed, checkpoints, resume, Serve routes."""

from __future__ import annotations

import base64
import io
import json
import re
from urllib.parse import quote

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from genai import checkpoint as ckpt
from genai.config import parse_job
from genai.quality import load_classifier
from tests.support import assert_self_contained, kill_after_first_checkpoint, resume

pytestmark = pytest.mark.e2e

GAN = {
    "name": "tiny-gan",
    "model": {"family": "gan", "conditional": True, "g_width": 8, "d_width": 8, "latent_dim": 8},
    "gan": {"eval_samples": 200},
    "train": {
        "max_steps": 6,
        "micro_batch_size": 32,
        "warmup_steps": 1,
        "log_every": 2,
        "eval_every": 3,
    },
    "deepspeed": {"zero_stage": 2, "precision": "fp32"},
    "scaling": {"num_workers": 2},
    "checkpoint": {"every_steps": 3, "keep": 2},
}
VAE = {
    "name": "tiny-vae",
    "model": {"family": "vae", "width": 8, "latent_dim": 4},
    "vae": {"iw_samples": 8, "eval_images": 32, "kl_warmup_steps": 2},
    "train": {
        "max_steps": 6,
        "micro_batch_size": 32,
        "warmup_steps": 1,
        "log_every": 2,
        "eval_every": 3,
    },
    "deepspeed": {"zero_stage": 3, "precision": "fp32"},
    "scaling": {"num_workers": 2},
    "checkpoint": {"every_steps": 3, "keep": 2},
}


def _spec(raw: dict, tmp, cache_dir) -> dict:
    return {
        **raw,
        "data": {"source": "digits", "cache_dir": str(cache_dir)},
        "checkpoint": {**raw["checkpoint"], "dir": str(tmp / raw["name"])},
    }


@pytest.fixture(scope="module")
def image_checkpoints(ray_session, tmp_path_factory, cache_dir):
    from genai.train.run import train

    tmp = tmp_path_factory.mktemp("images")
    return {raw["name"]: train(parse_job(_spec(raw, tmp, cache_dir))) for raw in (GAN, VAE)}


def test_gan_checkpoint_holds_both_engines_metrics_and_pictures(image_checkpoints):
    path = image_checkpoints["tiny-gan"]
    meta = ckpt.read_meta(path)
    assert (
        meta.family == "gan"
        and meta.step == 6
        and meta.export["class_names"] == [str(i) for i in range(10)]
    )
    assert set(meta.deepspeed_config) == {"generator", "discriminator"}
    for engine in ("generator", "discriminator"):
        assert (path / "deepspeed" / engine / "latest").read_text().strip() == "step-000006"
    assert (path / "model.safetensors").is_file() and (path / "discriminator.safetensors").is_file()
    first, last = meta.history[0], meta.history[-1]
    assert {
        "fd",
        "classes_covered",
        "cond_accuracy",
        "real_fd_floor",
        "classifier_accuracy",
    } <= set(last)
    assert last["classifier_accuracy"] > 0.9 and 0 < last["real_fd_floor"] < first["fd"]
    for name in ("samples.png", "curves.png"):
        with Image.open(path / name) as img:
            assert img.width > 100
    assert meta.pictures == ["samples.png", "curves.png"]
    assert_self_contained(path)
    assert load_classifier(meta.file(path, "classifier")).predict(
        torch.zeros(1, 1, 8, 8)
    ).shape == (1,)


def test_vae_zero3_reports_bounds_in_nats(image_checkpoints):
    meta = ckpt.read_meta(image_checkpoints["tiny-vae"])
    assert meta.deepspeed_config["vae"]["zero_optimization"]["stage"] == 3
    first, last = meta.history[0], meta.history[-1]
    assert last["val_neg_elbo"] < first["val_neg_elbo"]  # it learns, even in 6 steps
    # (IW <= ELBO on the same images is tested in test_images; here they use different subsets)
    assert np.isfinite(last["val_iw8_bound"]) and last["val_iw8_bound"] < first["val_iw8_bound"]
    assert np.isfinite(last["baseline_gaussian_nll"])
    assert {"samples.png", "reconstructions.png", "curves.png"} == set(meta.pictures)


@pytest.mark.full
def test_gan_killed_and_resumed_continues_both_engines(tmp_path, cache_dir):
    raw = _spec(GAN, tmp_path, cache_dir)
    raw = {
        **raw,
        "name": "gan-kill",
        "train": {**raw["train"], "max_steps": 2000, "log_every": 50, "eval_every": 1000},
        "checkpoint": {**raw["checkpoint"], "every_steps": 10},
    }
    spec_path = tmp_path / "gan.json"
    spec_path.write_text(json.dumps(raw))
    root = parse_job(raw).checkpoint_dir
    cmd, killed_at = kill_after_first_checkpoint(spec_path, root)
    r = resume(cmd, killed_at + 10)
    assert f"at step {killed_at}" in r.stdout + r.stderr
    final = ckpt.find_latest(root)
    assert ckpt.read_meta(final).step == killed_at + 10
    for engine in ("generator", "discriminator"):  # both engines saved at the same, continued step
        assert (final / "deepspeed" / engine / "latest").read_text().strip() == ckpt.step_name(
            killed_at + 10
        )


def _png_b64(arr: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


@pytest.fixture(scope="module")
def all_served(serve_url, image_checkpoints, zero3_checkpoint):
    """LM, GAN and VAE in one Serve application."""
    from ray import serve

    from genai.serve.app import build_app
    from genai.serve.spec import ServeSpec

    ckpts = [zero3_checkpoint, image_checkpoints["tiny-gan"], image_checkpoints["tiny-vae"]]
    serve.run(
        build_app(ServeSpec(), ckpts),
        name="genai-images",
        route_prefix="/",
        blocking=False,
    )
    client = httpx.Client(base_url=serve_url, timeout=60)
    yield client
    client.close()
    serve.delete("genai-images")


def _images(r: httpx.Response) -> list[np.ndarray]:
    assert r.status_code == 200, r.text
    out = []
    for item in r.json()["data"]:
        with Image.open(io.BytesIO(base64.b64decode(item["b64_json"]))) as img:
            out.append(np.asarray(img))
    return out


def test_every_route_over_http(all_served):
    c = all_served
    models = {m["id"]: m for m in c.get("/v1/models").json()["data"]}
    assert {m["family"] for m in models.values()} == {"lm", "gan", "vae"}
    assert models["tiny-gan"]["conditional"] is True and models["tiny-gan"]["image_size"] == 8
    # GAN: OpenAI images shape; the prompt picks the class; the seed fixes the images
    sevens = _images(
        c.post(
            "/v1/images/generations", json={"model": "tiny-gan", "prompt": "7", "n": 4, "seed": 1}
        )
    )
    assert len(sevens) == 4 and sevens[0].shape == (8, 8)
    again = _images(
        c.post(
            "/v1/images/generations", json={"model": "tiny-gan", "prompt": "7", "n": 4, "seed": 1}
        )
    )
    threes = _images(
        c.post(
            "/v1/images/generations", json={"model": "tiny-gan", "prompt": "3", "n": 4, "seed": 1}
        )
    )
    assert all(np.array_equal(a, b) for a, b in zip(sevens, again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(sevens, threes, strict=True))
    # VAE: prior samples (prompt accepted and ignored), reconstruct, interpolate
    assert (
        len(
            _images(
                c.post(
                    "/v1/images/generations",
                    json={"model": "tiny-vae", "prompt": "anything", "n": 3},
                )
            )
        )
        == 3
    )
    digit = (np.arange(64).reshape(8, 8) * 4).astype(np.uint8)
    recon = _images(
        c.post("/v1/vae/reconstruct", json={"model": "tiny-vae", "images": [_png_b64(digit)] * 2})
    )
    assert len(recon) == 2 and recon[0].shape == (8, 8)
    path = _images(
        c.post(
            "/v1/vae/interpolate",
            json={
                "model": "tiny-vae",
                "image_a": _png_b64(digit),
                "image_b": _png_b64(255 - digit),
                "steps": 5,
            },
        )
    )
    assert len(path) == 5
    # the LM still answers in the same application
    assert (
        c.post(
            "/v1/completions", json={"model": "tiny-z3", "prompt": "x", "max_tokens": 2}
        ).status_code
        == 200
    )


def test_concurrent_generations_are_batched_and_each_keeps_its_seed(all_served):
    import concurrent.futures as cf

    c = all_served
    bodies = [{"model": "tiny-gan", "prompt": str(i % 10), "n": 2, "seed": i} for i in range(8)]
    with cf.ThreadPoolExecutor(8) as pool:
        together = list(
            pool.map(lambda b: _images(c.post("/v1/images/generations", json=b)), bodies)
        )
    alone = [_images(c.post("/v1/images/generations", json=b)) for b in bodies[:3]]
    for a, b in zip(alone, together[:3], strict=True):
        assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize(
    ("route", "body", "status", "param"),
    [
        ("/v1/images/generations", {"model": "tiny-gan", "prompt": "7", "n": 0}, 422, "n"),
        ("/v1/images/generations", {"model": "tiny-gan", "prompt": "7", "n": 65}, 422, "n"),
        ("/v1/images/generations", {"model": "tiny-gan", "prompt": "7", "n": "2"}, 422, "n"),
        ("/v1/images/generations", {"model": "tiny-gan", "prompt": "cat"}, 422, "prompt"),
        (
            "/v1/images/generations",
            {"model": "tiny-gan", "prompt": "7", "response_format": "url"},
            422,
            "response_format",
        ),
        (
            "/v1/images/generations",
            {"model": "tiny-gan", "prompt": "7", "size": "64x64"},
            422,
            "size",
        ),
        ("/v1/images/generations", {"model": "tiny-z3", "prompt": "7"}, 400, "model"),
        ("/v1/images/generations", {"prompt": "7"}, 422, "model"),  # two image models are served
        ("/v1/completions", {"model": "tiny-gan", "prompt": "x"}, 400, "model"),
        ("/v1/vae/reconstruct", {"model": "tiny-gan", "images": ["AAAA"]}, 400, "model"),
        ("/v1/vae/reconstruct", {"model": "tiny-vae", "images": ["not base64!"]}, 422, "images"),
        (
            "/v1/vae/reconstruct",
            {"model": "tiny-vae", "images": [base64.b64encode(b"GIF89a junk").decode()]},
            422,
            "images",
        ),
        ("/v1/vae/reconstruct", {"model": "tiny-vae", "images": []}, 422, "images"),
        ("/v1/vae/reconstruct", {"model": "tiny-vae", "images": ["AAAA"] * 65}, 422, "images"),
        (
            "/v1/vae/interpolate",
            {"model": "tiny-vae", "image_a": "AAAA", "image_b": "AAAA", "steps": 1},
            422,
            "steps",
        ),
        ("/v1/vae/interpolate", {"model": "tiny-vae", "image_b": "AAAA"}, 422, "image_a"),
    ],
)
def test_bad_image_requests_get_4xx_naming_the_field(all_served, route, body, status, param):
    c = all_served
    r = c.post(route, json=body)
    assert r.status_code == status, r.text
    assert r.json()["error"]["param"] == param
    ok = c.post("/v1/images/generations", json={"model": "tiny-gan", "prompt": "1", "n": 1})
    assert ok.status_code == 200  # the replicas are alive and well


def test_wrong_image_size_is_named(all_served):
    big = _png_b64(np.zeros((16, 16), np.uint8))
    r = all_served.post(
        "/v1/vae/reconstruct",
        json={"model": "tiny-vae", "images": [_png_b64(np.zeros((8, 8), np.uint8)), big]},
    )
    assert r.status_code == 422
    assert (
        "images[1] is 16x16" in r.json()["error"]["message"]
        and r.json()["error"]["param"] == "images"
    )


# ------------------------------------------------------------------------------- fuzzing


def _from_property(prop: dict, components: dict, json_values):
    """Values for one field, near its schema: its type and bounds (and just past them)."""
    from hypothesis import strategies as st

    if "$ref" in prop:
        return _body(components["schemas"][prop["$ref"].split("/")[-1]], components, json_values)
    if "anyOf" in prop:
        return st.one_of([_from_property(p, components, json_values) for p in prop["anyOf"]])
    if "enum" in prop:
        return st.sampled_from(prop["enum"]) | st.text(max_size=8)
    kind = prop.get("type")
    if kind == "integer":
        lo, hi = prop.get("minimum", -10), prop.get("maximum", 10_000)
        return st.integers(lo - 3, hi + 3) | st.integers()
    if kind == "number":
        lo, hi = prop.get("minimum", -10.0), prop.get("maximum", 10.0)
        return st.floats(lo - 1, hi + 1) | st.floats(allow_nan=False, allow_infinity=False)
    if kind == "string":
        return st.text(max_size=prop.get("maxLength", 64) + 4)
    if kind == "boolean":
        return st.booleans()
    if kind == "array":
        item = _from_property(prop.get("items", {}), components, json_values)
        return st.lists(item, max_size=min(prop.get("maxItems", 6), 6) + 1)
    if kind == "object":
        return _body(prop, components, json_values)
    return json_values


def _body(schema: dict, components: dict, json_values):
    """Dicts with a random subset of the schema's fields (required ones usually present)."""
    from hypothesis import strategies as st

    props = schema.get("properties", {})
    if not props:
        return json_values
    fields = {k: _from_property(v, components, json_values) for k, v in props.items()}
    required = set(schema.get("required", []))
    return st.fixed_dictionaries(
        {k: f for k, f in fields.items() if k in required},
        optional={k: f for k, f in fields.items() if k not in required},
    )


def _fuzz_cases(openapi: dict):
    """(method, path, body) for every route: bodies near the route's own schema (right and
    wrong types, values in and just out of bounds), arbitrary JSON, and raw bytes."""
    from hypothesis import strategies as st

    json_values = st.recursive(
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
        max_leaves=12,
    )
    cases = []
    for path, ops in sorted(openapi["paths"].items()):
        for method, op in ops.items():
            if method == "get":
                cases.append(st.just((method, path, None)))
                continue
            if method == "delete":  # DELETE /v1/adapters/{name}: any name in the path
                names = st.text(min_size=1, max_size=80).map(lambda t: quote(t, safe=""))
                cases.append(
                    names.map(lambda n, p=path: ("delete", re.sub(r"\{\w+\}", n, p), None))
                )
                continue
            schema = op["requestBody"]["content"]["application/json"]["schema"]
            body = (
                _from_property(schema, openapi["components"], json_values)
                | json_values
                | st.binary(max_size=64)
            )
            cases.append(st.tuples(st.just(method), st.just(path), body))
    return st.one_of(cases)


FUZZ_CASES = 1000


@pytest.mark.full
def test_fuzzing_every_route_gives_no_5xx_and_no_replica_dies(all_served):
    """1,000 property-based cases from the app's OpenAPI schema: valid and invalid bodies
    on every route. Every answer is < 500 and JSON, and the gateway and model replicas
    that answered /healthz before answer it after."""
    from hypothesis import HealthCheck, given, settings

    client = all_served
    openapi = client.get("/openapi.json").json()

    def replicas() -> set[tuple[str, str]]:
        health = [client.get("/healthz").json() for _ in range(8)]
        return {(h["gateway"], h["replica"]) for h in health}

    before = replicas()
    statuses: dict[int, int] = {}

    @settings(
        max_examples=FUZZ_CASES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,  # the same 1,000 cases on every run
    )
    @given(case=_fuzz_cases(openapi))
    def run(case):
        method, path, body = case
        if method == "get":
            r = client.get(path)
        elif method == "delete":
            r = client.delete(path)
        elif isinstance(body, bytes):
            r = client.post(path, content=body, headers={"content-type": "application/json"})
        else:
            r = client.post(path, json=body)
        statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
        assert r.status_code < 500, (method, path, body, r.text[:300])
        if r.headers["content-type"].startswith("text/event-stream"):
            assert r.text.rstrip().endswith("data: [DONE]"), r.text[-300:]
        else:
            r.json()

    run()
    assert sum(statuses.values()) == FUZZ_CASES
    assert statuses.get(200, 0) > 0 and sum(v for s, v in statuses.items() if s >= 400) > 0
    after = replicas()
    assert before == after, f"replicas changed: {before} -> {after}"
    print(f"fuzz: {FUZZ_CASES} cases, statuses {dict(sorted(statuses.items()))}")


@pytest.mark.parametrize(
    ("content", "status"),
    [
        (b"[" * 600_000 + b"]" * 600_000, 413),  # over the 1 MB body limit
        (b'{"prompt": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", 400),  # past the parser's depth
        (b'{"prompt": ' + b"[" * 500 + b"]" * 500 + b"}", 422),  # deep, parsed, wrong type
        (b'{"prompt": "\xff\xfe bad utf-8"}', 400),
        (b'{"prompt": "x", "max_tokens": 99999999999999999999999}', 422),
        (b'{"prompt": "", "n": 1000000}', 422),
    ],
)
def test_hostile_bodies_get_4xx(all_served, content, status):
    client = all_served
    path = "/v1/images/generations" if b'"n"' in content else "/v1/completions"
    r = client.post(path, content=content, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text[:300]
    assert r.json()["error"]["param"] in ("body", "prompt", "max_tokens", "n")


def test_a_slow_client_does_not_hold_up_others(all_served):
    """A client trickling its body byte by byte: others are answered meanwhile."""
    import socket
    import threading
    import time as _time

    client = all_served
    host, port = client.base_url.host, client.base_url.port
    body = b'{"prompt": "x", "max_tokens": 2}'
    head = (
        f"POST /v1/completions HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    reply: list[bytes] = []

    def slow() -> None:
        with socket.create_connection((host, port), timeout=60) as s:
            s.sendall(head)
            for b in body:
                s.sendall(bytes([b]))
                _time.sleep(0.1)
            reply.append(s.recv(65536))

    t = threading.Thread(target=slow)
    t.start()
    _time.sleep(0.5)
    t0 = _time.perf_counter()
    fast = client.post("/v1/completions", json={"prompt": "x", "max_tokens": 2})
    fast_s = _time.perf_counter() - t0
    t.join(timeout=60)
    assert fast.status_code == 200 and fast_s < 2.5  # the slow body takes 3.2 s to arrive
    assert reply and reply[0].startswith(b"HTTP/1.1 200")
