"""Ray Serve over real HTTP: completions, models, health, bad input, auth, no pickles."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from genai.cluster import free_port

pytestmark = pytest.mark.e2e


class _Boom:
    """Unpickling this writes a marker file: proof that something unpickled it."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path(self.marker).write_text, ("unpickled!",))


KEYS = {"alice": "sk-alice-0001", "bob": "sk-bob-00002"}
SLOW_KEY = "sk-carol-0003"  # in the keys file with 6 requests/min: a burst of 1
# in the keys file with scopes: dave may only generate, and only with other models; erin
# may do everything, admin included; frank may only read his generations (keys without
# `actions` may do all but admin)
SCOPED = {"dave": "sk-dave-00004", "erin": "sk-erin-00005", "frank": "sk-frank-0006"}


@pytest.fixture(scope="module")
def genlog_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("generations")


@pytest.fixture(scope="module")
def served(serve_url, zero3_checkpoint, tmp_path_factory, genlog_dir):
    """The ZeRO-3 checkpoint, with a booby-trapped pickle beside it, served through the
    Serve-native app builder with named API keys from an env var and a file."""
    from ray import serve

    from genai.serve.app import AppArgs, app_builder

    ckpt = tmp_path_factory.mktemp("trapped") / "step"
    shutil.copytree(zero3_checkpoint, ckpt, symlinks=True)
    marker = ckpt.parent / "UNPICKLED"
    for name in ("pytorch_model.bin", "training_args.bin", "optimizer.pt"):
        (ckpt / name).write_bytes(pickle.dumps(_Boom(str(marker))))

    keys_file = ckpt.parent / "keys.yaml"
    keys_file.write_text(
        f"carol: {{key: {SLOW_KEY}, requests_per_minute: 6}}\n"
        f"dave: {{key: {SCOPED['dave']}, models: ['other-*'], actions: [generate]}}\n"
        f"erin: {{key: {SCOPED['erin']}, actions: [generate, feedback, log, admin]}}\n"
        f"frank: {{key: {SCOPED['frank']}, actions: [log]}}\n"
    )
    env = {"GENAI_TEST_KEYS": ",".join(f"{n}:{k}" for n, k in KEYS.items())}
    args = AppArgs(
        checkpoints=[str(ckpt)],
        max_tokens_limit=64,
        max_body_bytes=20_000,
        api_keys_env="GENAI_TEST_KEYS",
        api_keys_file=str(keys_file),
        # files rotate every second here, so a test reads them soon
        generation_log={"dir": str(genlog_dir), "flush_s": 0.2, "rotate_s": 1},
    )
    with pytest.MonkeyPatch.context() as mp:  # keys are read where the app is built
        for k, v in env.items():
            mp.setenv(k, v)
        application = app_builder(args)
    serve.run(application, name="genai-test", route_prefix="/", blocking=False)
    client = httpx.Client(
        base_url=serve_url, timeout=60, headers={"Authorization": f"Bearer {KEYS['bob']}"}
    )
    yield client, marker
    client.close()
    serve.delete("genai-test")


def test_completion_round_trip(served):
    client, marker = served
    r = client.post(
        "/v1/completions",
        json={"model": "tiny-z3", "prompt": "import ", "max_tokens": 8, "seed": 3},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "text_completion" and body["model"] == "tiny-z3"
    choice = body["choices"][0]
    assert isinstance(choice["text"], str) and choice["finish_reason"] in ("stop", "length")
    u = body["usage"]
    assert u["prompt_tokens"] >= 1 and 1 <= u["completion_tokens"] <= 8
    assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"]
    # what `curl -d '{...}'` sends (form content type) is read as JSON too
    curl_like = client.post(
        "/v1/completions",
        content=b'{"prompt": "import ", "max_tokens": 8, "seed": 3}',
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert curl_like.status_code == 200 and curl_like.json()["choices"][0]["text"] == choice["text"]
    # same seed, same text; the model field may be left out when one model is served
    again = client.post(
        "/v1/completions", json={"prompt": "import ", "max_tokens": 8, "seed": 3}
    ).json()
    assert again["choices"][0]["text"] == choice["text"]
    assert not marker.exists(), "a pickle in the checkpoint dir was unpickled"


def test_models_and_health(served):
    client, _ = served
    models = client.get("/v1/models").json()
    assert models["object"] == "list"
    (card,) = models["data"]
    assert (
        card["id"] == "tiny-z3"
        and card["family"] == "lm"
        and card["step"] == 6
        and card["context_length"] == 96
    )
    health = httpx.get(
        f"{str(client.base_url).rstrip('/')}/healthz"
    ).json()  # no key needed for health checks
    assert health["status"] == "ok" and health["models"] == ["tiny-z3"]


def test_stop_sequences_end_the_text(served):
    client, _ = served
    full = client.post(
        "/v1/completions", json={"prompt": "def ", "max_tokens": 24, "temperature": 0.0}
    ).json()
    text = full["choices"][0]["text"]
    if len(text) < 4:
        pytest.skip("greedy completion too short to pick a stop string")
    stop = text[2:4]
    cut = client.post(
        "/v1/completions",
        json={"prompt": "def ", "max_tokens": 24, "temperature": 0.0, "stop": stop},
    ).json()
    assert cut["choices"][0]["finish_reason"] == "stop"
    assert cut["choices"][0]["text"] == text[: text.index(stop)]


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        (b'{"prompt": "x", "max_tokens": ', 400, "body"),
        ({"prompt": "x", "max_tokens": 0}, 422, "max_tokens"),
        ({"prompt": "x", "max_tokens": -1}, 422, "max_tokens"),
        ({"prompt": "x", "max_tokens": 10**9}, 422, "max_tokens"),
        ({"prompt": "x", "max_tokens": 65}, 422, "max_tokens"),  # over serve.max_tokens_limit
        ({"prompt": "x", "max_tokens": "5"}, 422, "max_tokens"),
        ({"prompt": 5}, 422, "prompt"),
        ({"max_tokens": 5}, 422, "prompt"),
        ({"prompt": "x", "temperature": 3}, 422, "temperature"),
        ({"prompt": "x", "top_p": 0}, 422, "top_p"),
        ({"prompt": "x", "stop": ["a", "b", "c", "d", "e"]}, 422, "stop"),
        ({"prompt": "x", "model": "nope"}, 404, "model"),
        (
            {"prompt": "word " * 200, "max_tokens": 64},
            400,
            "max_tokens",
        ),  # past the 96-token context
        ({"prompt": "x" * 30_000}, 413, "body"),
    ],
)
def test_bad_requests_get_4xx_json_naming_the_field(served, body, status, param):
    client, _ = served
    before = client.get("/healthz").json()["replica"]
    if isinstance(body, bytes):
        r = client.post(
            "/v1/completions", content=body, headers={"content-type": "application/json"}
        )
    else:
        r = client.post("/v1/completions", json=body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["param"] == param and err["message"]
    assert len(r.content) < 1000  # the input is never echoed back
    # the same replica answers a good request right after
    ok = client.post("/v1/completions", json={"prompt": "x", "max_tokens": 2})
    assert ok.status_code == 200
    assert client.get("/healthz").json()["replica"] == before


def test_api_keys_are_enforced(served):
    client, _ = served
    url = f"{str(client.base_url).rstrip('/')}/v1/completions"
    assert httpx.post(url, json={"prompt": "x"}).status_code == 401
    assert (
        httpx.post(url, json={"prompt": "x"}, headers={"Authorization": "Bearer wrong"}).status_code
        == 401
    )
    r = httpx.post(
        url,
        json={"prompt": "x", "max_tokens": 2},
        headers={"Authorization": f"Bearer {KEYS['alice']}"},
        timeout=60,
    )
    assert r.status_code == 200


def test_key_scopes_answer_403_naming_what_is_missing(served):
    """One 403 per scope: a model outside the key's globs, and each action (generate,
    feedback, log, admin) it was not granted; 401 stays for an unknown key."""
    client, _ = served

    def as_(name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {SCOPED.get(name) or KEYS[name]}"}

    def refused(r: httpx.Response, *words: str) -> None:
        assert r.status_code == 403, r.text
        err = r.json()["error"]
        assert err["type"] == "permission_error" and all(w in err["message"] for w in words), err

    body = {"model": "tiny-z3", "prompt": "x", "max_tokens": 1}
    # models: dave's globs do not cover tiny-z3 (nor a model that does not exist)
    refused(
        client.post("/v1/completions", json=body, headers=as_("dave")), "dave", "tiny-z3", "models"
    )
    refused(
        client.post("/v1/completions", json={**body, "model": "nope"}, headers=as_("dave")), "nope"
    )
    assert client.get("/v1/models", headers=as_("dave")).json()["data"] == []
    assert [m["id"] for m in client.get("/v1/models").json()["data"]] == ["tiny-z3"]
    # actions: feedback and log not granted to dave; admin not to bob (no `actions`: all but admin)
    refused(
        client.post(
            "/v1/feedback", json={"id": "cmpl-" + "0" * 24, "score": 1}, headers=as_("dave")
        ),
        "dave",
        "feedback",
    )
    refused(client.get("/v1/generations", headers=as_("dave")), "read the generation log")
    refused(client.post("/v1/adapters", json={"name": "a", "path": "/nowhere"}), "bob", "admin")
    refused(client.delete("/v1/adapters/a"), "bob", "admin")
    refused(client.get("/v1/generations", params={"key": "alice"}), "bob", "admin")
    refused(client.post("/v1/completions", json=body, headers=as_("frank")), "frank", "generate")
    assert client.get("/v1/generations", headers=as_("frank")).json()["data"] == []
    # erin holds every action: past the scope check, the request itself is judged
    r = client.post("/v1/adapters", json={"name": "a", "path": "/nowhere"}, headers=as_("erin"))
    assert r.status_code in (400, 404), r.text
    assert client.delete("/v1/adapters/a", headers=as_("erin")).status_code == 404
    assert client.post("/v1/completions", json=body, headers=as_("erin")).status_code == 200
    bad = {"Authorization": "Bearer sk-nobody-0000"}
    assert client.post("/v1/completions", json=body, headers=bad).status_code == 401


def test_a_keys_rate_limit_answers_429_with_retry_after(served):
    client, _ = served
    slow = {"Authorization": f"Bearer {SLOW_KEY}"}
    body = {"prompt": "x", "max_tokens": 1}
    first = client.post("/v1/completions", json=body, headers=slow)
    second = client.post("/v1/completions", json=body, headers=slow)
    assert first.status_code == 200, first.text
    assert second.status_code == 429 and 1 <= int(second.headers["retry-after"]) <= 10
    err = second.json()["error"]
    assert err["type"] == "rate_limit_error" and "carol" in err["message"]
    # other keys are not limited by carol's bucket
    assert client.post("/v1/completions", json=body).status_code == 200


def test_requests_and_tokens_are_counted_per_key_name(served):
    """Ray's metrics export (what Prometheus scrapes) carries the key's name, never the key."""
    import ray

    client, _ = served
    headers = {"Authorization": f"Bearer {KEYS['alice']}"}
    ok = client.post("/v1/completions", json={"prompt": "x", "max_tokens": 2}, headers=headers)
    assert ok.status_code == 200, ok.text
    port = ray._private.worker.global_worker.node.metrics_export_port
    deadline, text = time.time() + 60, ""
    while time.time() < deadline:  # replicas push metrics every few seconds
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        lines = [ln for ln in text.splitlines() if 'key="alice"' in ln]
        if any("genai_requests_total" in ln for ln in lines) and any(
            "genai_tokens_total" in ln for ln in lines
        ):
            break
        time.sleep(2)
    else:
        pytest.fail("no per-key genai metrics for alice in Ray's export")
    assert all(k not in text for k in (*KEYS.values(), SLOW_KEY))


def test_genai_serve_cli_query_and_sigterm(zero3_checkpoint, tmp_path):
    """`genai serve` in the foreground, `genai query` against it, SIGTERM shuts both Serve and Ray down."""
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "genai.cli", "serve", str(zero3_checkpoint), "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 180
        while time.time() < deadline:
            if "serving at" in (tmp_path / "serve.log").read_text():
                break
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            time.sleep(0.5)
        q = subprocess.run(
            [
                sys.executable,
                "-m",
                "genai.cli",
                "query",
                "import ",
                "--max-tokens",
                "8",
                "--url",
                f"http://127.0.0.1:{port}",
                "--seed",
                "1",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert q.returncode == 0, q.stderr
        assert q.stdout.startswith("import ")
        bad = subprocess.run(
            [
                sys.executable,
                "-m",
                "genai.cli",
                "query",
                "x",
                "--max-tokens",
                "0",
                "--url",
                f"http://127.0.0.1:{port}",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert (
            bad.returncode == 2
            and "max_tokens" in bad.stderr
            and len(bad.stderr.strip().splitlines()) == 1
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        assert "shutting down" in (tmp_path / "serve.log").read_text()
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def _wait_logged(
    directory: Path, ids: set[str], timeout: float = 60, scored: set[str] = frozenset()
):
    """The log's rows once ``ids`` are logged and ``scored`` have their feedback joined
    (feedback is written by the same writer thread, possibly a flush later)."""
    from genai.serve import genlog

    deadline = time.time() + timeout
    while True:
        table, _ = genlog.read(directory)
        rows = {r["id"]: r for r in table.to_pylist()}
        done = ids <= rows.keys() and all(rows[i]["score"] is not None for i in scored)
        if done or time.time() > deadline:
            return rows
        time.sleep(0.3)


def test_generation_log_with_feedback_and_a_torn_file(served, genlog_dir, zero3_checkpoint, capsys):
    from genai.checkpoint import read_meta
    from genai.cli import main

    client, _ = served
    plain = client.post(
        "/v1/completions", json={"prompt": "log me ", "max_tokens": 6, "seed": 1}
    ).json()
    alice = {"Authorization": f"Bearer {KEYS['alice']}"}
    streamed, sid = "", None
    with client.stream(
        "POST",
        "/v1/completions",
        json={"prompt": "x = ", "max_tokens": 5, "stream": True},
        headers=alice,
    ) as r:
        for line in r.iter_lines():
            if line.startswith("data: {"):
                event = json.loads(line[6:])
                sid = event["id"]
                streamed += event["choices"][0]["text"]
    missing = client.post("/v1/completions", json={"model": "nope", "prompt": "x"})
    assert missing.status_code == 404

    # feedback: a score for a logged id; bad scores and ids name the field
    fb = client.post("/v1/feedback", json={"id": plain["id"], "score": 1, "comment": "good"})
    assert fb.status_code == 200 and fb.json()["score"] == 1, fb.text
    client.post("/v1/feedback", json={"id": sid, "score": -0.5})
    for body, field in (
        ({"id": plain["id"], "score": 3}, "score"),
        ({"id": "cmpl-<script>", "score": 1}, "id"),
        ({"score": 1}, "id"),
    ):
        bad = client.post("/v1/feedback", json=body)
        assert bad.status_code == 422 and bad.json()["error"]["param"] == field, bad.text

    rows = _wait_logged(genlog_dir, {plain["id"], sid}, scored={plain["id"], sid})
    meta = read_meta(zero3_checkpoint)
    p, s = rows[plain["id"]], rows[sid]
    assert p["prompt"] == "log me " and p["output"] == plain["choices"][0]["text"]
    assert (p["model"], p["step"], p["spec_hash"], p["key"], p["status"]) == (
        "tiny-z3",
        meta.step,
        meta.spec_hash,
        "bob",
        200,
    )
    assert p["completion_tokens"] == plain["usage"]["completion_tokens"] and p["latency_s"] > 0
    assert json.loads(p["params"])["max_tokens"] == 6 and json.loads(p["params"])["seed"] == 1
    assert (p["score"], p["comment"]) == (1.0, "good")
    assert s["output"] == streamed and s["key"] == "alice" and s["score"] == -0.5
    assert any(r["status"] == 404 and r["error"] for r in rows.values())

    # over HTTP, a key reads its own generations, newest first, with their scores
    mine = client.get("/v1/generations", params={"limit": 50}).json()["data"]
    assert plain["id"] in [r["id"] for r in mine] and sid not in [r["id"] for r in mine]
    assert {r["key"] for r in mine} == {"bob"} and mine == sorted(
        mine, key=lambda r: r["time"], reverse=True
    )
    assert next(r for r in mine if r["id"] == plain["id"])["score"] == 1.0
    erin = {"Authorization": f"Bearer {SCOPED['erin']}"}
    theirs = client.get("/v1/generations", params={"key": "alice"}, headers=erin).json()["data"]
    assert sid in [r["id"] for r in theirs]
    assert client.get("/v1/generations", params={"limit": 0}).status_code == 422

    # the well-scored generations as a synthetic corpus for data.synthetic
    corpus = genlog_dir.parent / "synthetic"
    args = ["generations", "export", "--dir", str(genlog_dir), "--min-score", "1"]
    assert main([*args, "--dataset", str(corpus)]) == 0
    (record,) = [
        json.loads(line) for line in (corpus / "generations.jsonl").read_text().splitlines()
    ]
    assert record["text"] == "log me " + plain["choices"][0]["text"]
    assert (record["generation_id"], record["model"], record["origin"]) == (
        plain["id"],
        "tiny-z3",
        "synthetic",
    )
    assert main(args) == 2  # export needs --out or --dataset
    capsys.readouterr()

    # a torn file (a kill mid-write, renamed by hand) and a foreign one are skipped
    complete = sorted(genlog_dir.glob("generations-*.parquet"))[0]
    data = complete.read_bytes()
    (genlog_dir / "generations-torn.parquet").write_bytes(data[: len(data) // 2])
    (genlog_dir / "generations-junk.parquet").write_bytes(b"not parquet")
    assert (
        main(["generations", "--dir", str(genlog_dir), "--model", "tiny-z3", "--min-score", "1"])
        == 0
    )
    out, err = capsys.readouterr()
    assert plain["id"] in out and sid not in out and "(1 generations)" in out, out
    assert "generations-torn.parquet" in err and "generations-junk.parquet" in err
    csv = genlog_dir.parent / "log.csv"
    assert main(["generations", "--dir", str(genlog_dir), "--since", "1h", "--out", str(csv)]) == 0
    assert csv.read_text().count(plain["id"]) == 1
    assert main(["generations", "--dir", str(genlog_dir), "--since", "soon"]) == 2
    assert "--since" in capsys.readouterr().err


def test_playground_in_a_real_browser(served, serve_url, browser, genlog_dir, capsys):
    """Type a key and a prompt, watch the streamed text arrive, rate it, and find the
    rating in `genai generations`. The screenshot is kept in test-artifacts/."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select, WebDriverWait

    from genai.cli import main

    wait = WebDriverWait(browser, 60)
    browser.get(serve_url.rstrip("/") + "/")
    assert browser.title == "genai playground"
    browser.find_element(By.ID, "key").send_keys(KEYS["alice"] + "\n")
    wait.until(ec.text_to_be_present_in_element((By.ID, "status"), "1 model(s)"))
    assert (
        Select(browser.find_element(By.ID, "model")).first_selected_option.get_attribute("value")
        == "tiny-z3"
    )
    browser.find_element(By.ID, "max-tokens").clear()
    browser.find_element(By.ID, "max-tokens").send_keys("24")
    browser.find_element(By.ID, "prompt").send_keys("def add(a, b):")
    # count the output's updates: streamed text arrives in pieces, not at once
    browser.execute_script(
        "window.updates = 0; new MutationObserver(() => window.updates++)"
        ".observe(document.getElementById('output'), {childList: true, characterData: true, subtree: true});"
    )
    browser.find_element(By.ID, "send").click()
    wait.until(lambda d: d.find_element(By.ID, "gen-id").text.startswith("cmpl-"))
    gen_id = browser.find_element(By.ID, "gen-id").text
    output = browser.find_element(By.ID, "output").get_attribute("textContent")
    assert output and browser.execute_script("return window.updates") >= 2
    assert browser.find_element(By.ID, "error").text == ""
    browser.find_element(By.ID, "thumbs-up").click()
    wait.until(ec.text_to_be_present_in_element((By.ID, "rated"), "thanks: good"))
    # the key's recent generations list it (the page refreshes after a rating)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, f'tr[data-id="{gen_id}"]'))
    artifacts = Path(__file__).resolve().parent.parent / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    assert browser.save_screenshot(str(artifacts / "playground.png"))

    rows = _wait_logged(genlog_dir, {gen_id}, scored={gen_id})
    assert rows[gen_id]["score"] == 1.0 and rows[gen_id]["key"] == "alice"
    assert rows[gen_id]["output"] == output and rows[gen_id]["prompt"] == "def add(a, b):"
    capsys.readouterr()
    assert (
        main(["generations", "--dir", str(genlog_dir), "--min-score", "1", "--width", "200"]) == 0
    )
    assert gen_id in capsys.readouterr().out
