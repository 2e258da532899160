"""Fine-tuning for real: LoRA chat SFT of an imported model on Ray Train + DeepSpeed (ZeRO-2,
2 workers), its adapter loaded by peft and resumed exactly; the base served with adapters
over HTTP (/v1/models, mixed requests, logprobs/echo, adapters added and removed, 4xx),
and the official openai client streaming a chat completion from an adapter."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import httpx
import pytest
import torch
from safetensors.torch import load_file

from genai import checkpoint as ckpt
from genai.testing.adapters import random_adapter
from tests.support import chat_jsonl, tiny_llama_dir

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    from genai.families.lm.importer import import_model

    root = tmp_path_factory.mktemp("ft")
    tiny_llama_dir(root / "hf")
    return import_model(str(root / "hf"), root / "base", log=lambda _: None)


@pytest.fixture(scope="module")
def lora_spec(base, tmp_path_factory):
    from genai.config import parse_job

    root = tmp_path_factory.mktemp("lora")
    raw = {
        "name": "sums",
        "model": {
            "family": "lm",
            "arch": "llama",
            "pretrained_path": str(base),
            "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]},
        },
        "data": {
            "source": str(chat_jsonl(root / "chat.jsonl", n=40)),
            "format": "chat",
            "seq_len": 64,
            "val_fraction": 0.2,
        },
        "train": {
            "max_steps": 6,
            "micro_batch_size": 2,
            "lr": 1e-2,
            "warmup_steps": 1,
            "log_every": 2,
            "eval_every": 3,
        },
        # fp32: the resume check compares weights exactly
        "deepspeed": {"zero_stage": 2, "precision": "fp32"},
        "scaling": {"num_workers": 2},
        "checkpoint": {"dir": str(root / "ckpt"), "every_steps": 3, "keep": 3},
    }
    return parse_job(raw)


@pytest.fixture(scope="module")
def lora_run(ray_session, lora_spec) -> Path:
    from genai.train.run import train

    return train(lora_spec)


def test_a_lora_run_leaves_an_adapter_peft_loads(lora_run, base):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    meta = ckpt.read_meta(lora_run)
    assert ckpt.is_adapter(lora_run) and not (lora_run / ckpt.WEIGHTS).exists()
    assert meta.export["base"] == {
        "path": str(base),
        "name": "base",
        "sha256": ckpt.read_meta(base).export["weights_sha256"],
    }
    assert meta.export["adapter"]["r"] == 4
    assert meta.history[-1]["val_loss"] < meta.history[0]["val_loss"]  # it learned
    # the conversations it trained on and held out: one manifest row each
    import pyarrow.parquet as pq

    rows = pq.read_table(lora_run / ckpt.DATASET).to_pylist()
    assert len(rows) == 40 and {"train", "val"} <= {r["split"] for r in rows}
    # exact copies of a conversation (chat_jsonl repeats some) are dropped, naming the first
    copies = [r for r in rows if r["split"] == "dropped"]
    assert all(r["duplicate_of"] and not r["kept"] for r in copies)
    first = {r["sha256"]: r for r in reversed(rows)}
    assert all(first[r["sha256"]]["split"] in ("train", "val") for r in copies)
    assert meta.export["dataset"]["version"]
    # the DeepSpeed shards hold the adapter and its optimizer state, not the frozen base
    shards = sum(f.stat().st_size for f in (lora_run / ckpt.DS_DIR).rglob("*.pt"))
    assert shards < (base / ckpt.WEIGHTS).stat().st_size

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), lora_run)
    saved = load_file(lora_run / ckpt.ADAPTER)
    assert saved and all("lora_" in k for k in saved)
    state = model.state_dict()
    for k, v in saved.items():
        torch.testing.assert_close(state[k.replace(".weight", ".default.weight")], v, msg=k)
    assert model.peft_config["default"].target_modules == {"q_proj", "v_proj"}


def _from_step_3(lora_spec, root: Path, **scaling):
    """The run's spec pointed at a copy of its step-3 checkpoint (``scaling`` overrides)."""
    root.mkdir()
    shutil.copytree(lora_spec.checkpoint_dir / "step-000003", root / "step-000003", symlinks=True)
    os.symlink("step-000003", root / "latest")
    return lora_spec.model_copy(
        update={
            "checkpoint": lora_spec.checkpoint.model_copy(update={"dir": str(root)}),
            "scaling": lora_spec.scaling.model_copy(update=scaling),
        }
    )


@pytest.mark.full  # out of make test's 10 minutes: see tests/test_tiers.py
def test_lora_resume_reproduces_the_uninterrupted_run(lora_run, lora_spec, tmp_path):
    """A copy of the run's step-3 checkpoint, resumed: the adapter at step 6 comes out the same."""
    from genai.train.run import train

    resumed = train(_from_step_3(lora_spec, tmp_path / "ckpt"), resume=True)
    assert ckpt.read_meta(resumed).step == 6
    want, got = load_file(lora_run / ckpt.ADAPTER), load_file(resumed / ckpt.ADAPTER)
    for k, v in want.items():
        torch.testing.assert_close(got[k], v, rtol=1e-5, atol=1e-6, msg=k)


@pytest.mark.full
def test_lora_resumes_on_another_worker_count(lora_run, lora_spec, tmp_path, capfd):
    """The 2-worker LoRA run's step-3 checkpoint continues on one worker (DeepSpeed universal
    checkpoint of the adapter's partitioned optimizer state, the frozen base from its own
    file): same global batch, so step 4's loss matches to reduction order and step 6's to the
    tolerance tests/test_reshard_e2e.py explains."""
    from genai.train.run import train

    resumed = train(_from_step_3(lora_spec, tmp_path / "ckpt", num_workers=1), resume=True)
    meta = ckpt.read_meta(resumed)
    assert meta.step == 6 and meta.world_size == 1
    assert ckpt.is_adapter(resumed)
    assert "re-sharding step-000003 from 2 to 1 workers" in "".join(capfd.readouterr())
    want = {int(c["step"]): c["loss"] for c in ckpt.read_meta(lora_run).curves}
    got = {int(c["step"]): c["loss"] for c in meta.curves}
    assert got[4] == pytest.approx(want[4], rel=1e-5), (got, want)
    assert got[6] == pytest.approx(want[6], rel=1e-3), (got, want)
    assert load_file(resumed / ckpt.ADAPTER).keys() == load_file(lora_run / ckpt.ADAPTER).keys()


@pytest.fixture(scope="module")
def served(serve_url, base, lora_run, tmp_path_factory):
    from ray import serve

    from genai.serve.app import build_app
    from genai.serve.spec import ServeSpec

    extra = tmp_path_factory.mktemp("adapters")
    spare = random_adapter(base, extra / "spare", "spare", seed=2, r=8)
    tiny_llama_dir(extra / "other-hf", seed=9)
    from genai.families.lm.importer import import_model

    other = import_model(str(extra / "other-hf"), extra / "other", log=lambda _: None)
    stray = random_adapter(other, extra / "stray", "stray", seed=3)
    spec = ServeSpec(adapters={"sums": str(lora_run)}, max_tokens_limit=64)
    serve.run(build_app(spec, [base]), name="genai-ft", route_prefix="/", blocking=False)
    client = httpx.Client(base_url=serve_url, timeout=60)
    yield client, spare, stray
    client.close()
    serve.delete("genai-ft")


def test_models_list_the_base_and_its_adapters_with_lineage(served, base, lora_run):
    client, *_ = served
    cards = {c["id"]: c for c in client.get("/v1/models").json()["data"]}
    assert set(cards) == {"base", "sums"}
    assert cards["base"]["lineage"]["kind"] == "import"
    assert cards["base"]["lineage"]["format"] == "hf"
    assert cards["sums"]["base"]["sha256"] == cards["base"]["weights_sha256"]
    assert cards["sums"]["base"]["path"] == str(base) and cards["sums"]["adapter"]["r"] == 4


def test_logprobs_and_echo_through_the_endpoint_agree_with_a_plain_forward(served, base, lora_run):
    """lm-eval's loglikelihood request: token-id prompts, echo, logprobs, max_tokens 1."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    client, *_ = served
    prompts = [[5, 60, 7, 80, 9], [11, 12, 130]]
    for model in ("base", "sums"):
        body = {"model": model, "prompt": prompts, "max_tokens": 1, "temperature": 0}
        r = client.post("/v1/completions", json={**body, "logprobs": 2, "echo": True})
        assert r.status_code == 200, r.text
        choices = r.json()["choices"]
        assert [c["index"] for c in choices] == [0, 1]
        net = AutoModelForCausalLM.from_pretrained(base).eval()
        if model == "sums":
            net = PeftModel.from_pretrained(net, lora_run).eval()
        for prompt, choice in zip(prompts, choices, strict=True):
            lp = choice["logprobs"]
            assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
            assert len(lp["tokens"]) == len(prompt) + 1
            ids = [*prompt, int(net(input_ids=torch.tensor([prompt])).logits[0, -1].argmax())]
            with torch.no_grad():
                logp = torch.log_softmax(net(input_ids=torch.tensor([ids])).logits[0], -1)
            want = logp[:-1].gather(1, torch.tensor(ids[1:])[:, None])[:, 0]
            torch.testing.assert_close(
                torch.tensor(lp["token_logprobs"][1:]), want, atol=1e-4, rtol=1e-4
            )
            # greedy: the generated token is the likeliest of its top_logprobs
            assert lp["token_logprobs"][-1] == pytest.approx(max(lp["top_logprobs"][-1].values()))
    # scoring only: max_tokens 0 with echo; without echo it is refused, naming the field
    r = client.post(
        "/v1/completions", json={"model": "base", "prompt": "a b", "max_tokens": 0, "echo": True}
    )
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 0
    r = client.post("/v1/completions", json={"model": "base", "prompt": "a", "max_tokens": 0})
    assert r.status_code == 422 and "max_tokens" in r.text


def test_adapters_are_added_and_removed_while_serving(served):
    client, spare, stray = served
    # 4xx: an unknown adapter, an adapter over other weights, a non-checkpoint, a taken name
    r = client.post("/v1/completions", json={"model": "nope", "prompt": "x"})
    assert r.status_code == 404 and r.json()["error"]["param"] == "model"
    r = client.post("/v1/adapters", json={"name": "stray", "path": str(stray)})
    assert r.status_code == 409 and "trained over 'other'" in r.json()["error"]["message"]
    r = client.post("/v1/adapters", json={"name": "x", "path": "/no/such/dir"})
    assert r.status_code == 404 and r.json()["error"]["param"] == "path"
    r = client.post("/v1/adapters", json={"name": "base", "path": str(spare)})
    assert r.status_code == 409 and r.json()["error"]["param"] == "name"

    r = client.post("/v1/adapters", json={"name": "spare", "path": str(spare)})
    assert r.status_code == 201, r.text
    assert r.json()["adapter"]["r"] == 8
    ids = {c["id"] for c in client.get("/v1/models").json()["data"]}
    assert ids == {"base", "sums", "spare"}
    body = {"prompt": "What is 2 plus 2?", "max_tokens": 4, "temperature": 0, "logprobs": 0}
    seen = {
        m: client.post("/v1/completions", json={**body, "model": m}).json()["choices"][0]
        for m in ("base", "sums", "spare")
    }
    # each answers with its own weights
    assert len({tuple(c["logprobs"]["token_logprobs"]) for c in seen.values()}) == 3

    assert client.delete("/v1/adapters/spare").status_code == 200
    assert client.post("/v1/completions", json={**body, "model": "spare"}).status_code == 404
    assert client.delete("/v1/adapters/spare").status_code == 404
    # adapters from the serve config are not removed over HTTP
    assert client.delete("/v1/adapters/sums").status_code == 404


def test_the_openai_client_streams_a_chat_completion_from_an_adapter(served, serve_url):
    from openai import OpenAI

    client = OpenAI(base_url=f"{serve_url}/v1", api_key="unused", max_retries=0)
    stream = client.chat.completions.create(
        model="sums",
        messages=[{"role": "user", "content": "What is 1 plus 3?"}],
        max_tokens=6,
        temperature=0,
        stream=True,
    )
    chunks = [c for c in stream if c.choices]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    whole = client.chat.completions.create(
        model="sums",
        messages=[{"role": "user", "content": "What is 1 plus 3?"}],
        max_tokens=6,
        temperature=0,
    )
    assert whole.choices[0].message.content == text
