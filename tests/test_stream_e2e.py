"""Batched decoding, streaming and chat over real HTTP (Ray Serve), and the official client."""

from __future__ import annotations

import concurrent.futures as cf
import json
import shutil
import time

import httpx
import pytest

pytestmark = pytest.mark.e2e

# A ChatML-style template: what a tokenizer fine-tuned from a local chat model carries
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


@pytest.fixture(scope="module")
def chat_served(serve_url, zero3_checkpoint, tmp_path_factory):
    """The ZeRO-3 LM as it is (no chat template), and a copy whose tokenizer has one."""
    from ray import serve

    from genai.serve.app import build_app
    from genai.serve.spec import ServeSpec

    chat = tmp_path_factory.mktemp("chat") / "step"
    shutil.copytree(zero3_checkpoint, chat, symlinks=True)
    (chat / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    meta = json.loads((chat / "meta.json").read_text())
    (chat / "meta.json").write_text(json.dumps({**meta, "name": "tiny-chat"}))

    spec = ServeSpec(max_tokens_limit=90)
    serve.run(
        build_app(spec, [zero3_checkpoint, chat]),
        name="genai-stream",
        route_prefix="/",
        blocking=False,
    )
    client = httpx.Client(base_url=serve_url, timeout=60)
    yield client
    client.close()
    serve.delete("genai-stream")


def _complete(c: httpx.Client, **body) -> dict:
    r = c.post("/v1/completions", json={"model": "tiny-z3", **body})
    assert r.status_code == 200, r.text
    return r.json()


def _sse(c: httpx.Client, route: str, body: dict) -> list:
    """The data of every server-sent event of a streamed request, [DONE] included."""
    out = []
    with c.stream("POST", route, json={**body, "stream": True}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data: "):
                data = line[len("data: ") :]
                out.append(data if data == "[DONE]" else json.loads(data))
    return out


def test_concurrent_requests_share_batches_and_keep_their_seeds(chat_served):
    c = chat_served
    bodies = [
        {"prompt": p, "max_tokens": 40, "seed": i, "temperature": t}
        for i, (p, t) in enumerate(
            [("import ", 1.0), ("def ", 0.8), ("class A:", 1.0), ("x = ", 0.0)] * 3
        )
    ]
    before = c.get("/healthz").json()["decoding"]["tiny-z3"]
    with cf.ThreadPoolExecutor(len(bodies)) as pool:
        together = list(pool.map(lambda b: _complete(c, **b), bodies))
    after = c.get("/healthz").json()["decoding"]["tiny-z3"]
    alone = [_complete(c, **b) for b in bodies[:4]]
    for a, t in zip(alone, together[:4], strict=True):
        assert a["choices"][0]["text"] == t["choices"][0]["text"]
        assert a["usage"] == t["usage"]
    # 12 requests of up to 40 tokens each took fewer decode steps than their tokens
    tokens = after["tokens"] - before["tokens"]
    steps = after["steps"] - before["steps"]
    assert tokens >= 12 and steps < tokens, (steps, tokens)


def test_a_stop_string_ends_only_its_own_sequence(chat_served):
    c = chat_served
    body = {"prompt": "def ", "max_tokens": 40, "temperature": 0.0}
    full = _complete(c, **body)["choices"][0]
    text = full["text"]
    if len(text) < 6:
        pytest.skip("greedy completion too short to pick a stop string")
    stop = text[3:5]
    with cf.ThreadPoolExecutor(2) as pool:
        cut_f = pool.submit(_complete, c, **body, stop=[stop])
        plain_f = pool.submit(_complete, c, **body)
        cut, plain = cut_f.result()["choices"][0], plain_f.result()["choices"][0]
    assert cut["finish_reason"] == "stop" and cut["text"] == text[: text.index(stop)]
    assert plain["text"] == text and plain["finish_reason"] == full["finish_reason"]


@pytest.mark.parametrize("stop", [None, ["\n\n", "):"]])
def test_streamed_chunks_add_up_to_the_non_streamed_text(chat_served, stop):
    c = chat_served
    body = {"model": "tiny-z3", "prompt": "import ", "max_tokens": 60, "seed": 11, "stop": stop}
    whole = _complete(c, **body)["choices"][0]
    events = _sse(c, "/v1/completions", {**body, "stream_options": {"include_usage": True}})
    assert events[-1] == "[DONE]"
    chunks = [e for e in events[:-1] if e["choices"]]
    assert all(e["object"] == "text_completion" for e in chunks)
    assert "".join(e["choices"][0]["text"] for e in chunks) == whole["text"]
    assert chunks[-1]["choices"][0]["finish_reason"] == whole["finish_reason"]
    assert all(e["choices"][0]["finish_reason"] is None for e in chunks[:-1])
    usage = events[-2]["usage"]
    assert usage["completion_tokens"] >= 1 and usage["total_tokens"] == (
        usage["prompt_tokens"] + usage["completion_tokens"]
    )


def test_openai_client_streams_completions_and_chat(chat_served):
    from openai import OpenAI

    base = str(chat_served.base_url).rstrip("/")
    client = OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0)
    whole = client.completions.create(model="tiny-z3", prompt="def ", max_tokens=30, seed=5)
    stream = client.completions.create(
        model="tiny-z3", prompt="def ", max_tokens=30, seed=5, stream=True
    )
    assert "".join(ch.choices[0].text for ch in stream) == whole.choices[0].text
    messages = [{"role": "user", "content": "def f():"}]
    chat = client.chat.completions.create(
        model="tiny-chat", messages=messages, max_tokens=20, seed=2
    )
    assert chat.object == "chat.completion" and chat.choices[0].message.role == "assistant"
    assert chat.usage.completion_tokens >= 1
    pieces = client.chat.completions.create(
        model="tiny-chat", messages=messages, max_tokens=20, seed=2, stream=True
    )
    chunks = list(pieces)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks) == (
        chat.choices[0].message.content
    )
    assert chunks[-1].choices[0].finish_reason == chat.choices[0].finish_reason
    # the template was applied: the prompt holds the role markers, not just the content
    assert chat.usage.prompt_tokens > whole.usage.prompt_tokens


def test_chat_without_a_template_is_a_400_that_says_so(chat_served):
    r = chat_served.post(
        "/v1/chat/completions",
        json={"model": "tiny-z3", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["param"] == "model" and "chat template" in err["message"]


def test_a_client_that_disconnects_mid_stream_frees_its_slot(chat_served):
    c = chat_served
    health = lambda: c.get("/healthz").json()["decoding"]["tiny-z3"]  # noqa: E731
    before = health()
    # keep the decoder busy so that each step takes a while, then walk away from a stream
    with cf.ThreadPoolExecutor(8) as pool:
        busy = [
            pool.submit(_complete, c, prompt="x", max_tokens=85, seed=i, temperature=1.0)
            for i in range(8)
        ]
        with c.stream(
            "POST",
            "/v1/completions",
            json={"model": "tiny-z3", "prompt": "import ", "max_tokens": 85, "stream": True},
        ) as r:
            first = next(line for line in r.iter_lines() if line.startswith("data: "))
            assert json.loads(first[6:])["choices"][0]["finish_reason"] is None
        # leaving the block closed the connection mid-stream
        deadline = time.time() + 20
        while time.time() < deadline and health()["cancelled"] == before["cancelled"]:
            time.sleep(0.05)
        assert health()["cancelled"] == before["cancelled"] + 1
        assert all(f.result()["usage"]["completion_tokens"] >= 1 for f in busy)
    deadline = time.time() + 10
    while time.time() < deadline and health()["active"]:
        time.sleep(0.05)
    assert health()["active"] == 0 and health()["queued"] == 0


@pytest.mark.parametrize(
    ("route", "body", "param"),
    [
        ("/v1/completions", {"model": "tiny-z3", "prompt": "x", "stream": "yes"}, "stream"),
        ("/v1/completions", {"model": "tiny-z3", "prompt": "x", "stream": 1}, "stream"),
        (
            "/v1/completions",
            {
                "model": "tiny-z3",
                "prompt": "x",
                "stream": True,
                "stream_options": {"include_usage": "y"},
            },
            "stream_options",
        ),
        ("/v1/chat/completions", {"model": "tiny-chat"}, "messages"),
        ("/v1/chat/completions", {"model": "tiny-chat", "messages": []}, "messages"),
        ("/v1/chat/completions", {"model": "tiny-chat", "messages": "hi"}, "messages"),
        (
            "/v1/chat/completions",
            {"model": "tiny-chat", "messages": [{"role": "wizard", "content": "hi"}]},
            "messages",
        ),
        (
            "/v1/chat/completions",
            {"model": "tiny-chat", "messages": [{"role": "user"}]},
            "messages",
        ),
        (
            "/v1/chat/completions",
            {"model": "tiny-chat", "messages": [{"role": "user", "content": "hi"}], "stream": "1"},
            "stream",
        ),
    ],
)
def test_bad_stream_and_messages_input_is_a_4xx_naming_the_field(chat_served, route, body, param):
    r = chat_served.post(route, json=body)
    assert 400 <= r.status_code < 500, r.text
    assert r.json()["error"]["param"] == param
    ok = chat_served.post(
        "/v1/chat/completions",
        json={
            "model": "tiny-chat",
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 2,
        },
    )
    assert ok.status_code == 200, ok.text
