"""DeepSpeed config generation, LR schedule, checkpoint commit rules, batched decoding."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from genai import checkpoint as ckpt
from genai.config import DeepSpeedSpec, TrainSpec
from genai.decoding.batch import BatchDecoder, generate
from genai.decoding.generation import Generation, Sampling, StopText, sample_rows
from genai.families.lm import ModelSpec
from genai.models.transformer import build_lm
from genai.train.engine import deepspeed_config, lr_lambda


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_deepspeed_config_is_explicit(stage):
    train = TrainSpec(micro_batch_size=4, grad_accum_steps=2, grad_clip=0.5)
    cfg = deepspeed_config(DeepSpeedSpec(zero_stage=stage, precision="fp32"), train, world_size=3)
    assert cfg["train_batch_size"] == 4 * 2 * 3 and cfg["gradient_clipping"] == 0.5
    assert cfg["zero_optimization"]["stage"] == stage
    assert cfg["bf16"]["enabled"] is False and cfg["fp16"]["enabled"] is False
    assert "auto" not in json.dumps(cfg)
    off = deepspeed_config(
        DeepSpeedSpec(zero_stage=max(stage, 1), offload_optimizer=True), train, 1
    )
    assert off["zero_optimization"]["offload_optimizer"]["device"] == "cpu"


def test_lr_schedule_warms_up_then_decays_to_floor():
    f = lr_lambda(TrainSpec(max_steps=100, warmup_steps=10, min_lr_ratio=0.1))
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0) and f(55) == pytest.approx(0.55)
    assert f(100) == pytest.approx(0.1) and f(500) == pytest.approx(0.1)
    assert all(f(s) >= f(s + 1) for s in range(10, 100))


def _fake_checkpoint(d, step):
    d.mkdir(parents=True)
    (d / ckpt.WEIGHTS).write_bytes(b"x")
    ckpt.write_meta(d, ckpt.Meta(step=step, name="m", family="lm", spec={}, spec_hash="0"))


def test_a_restart_after_a_failure_resumes_from_its_own_newest_checkpoint(tmp_path):
    """What train_loop_per_worker continues from: the driver's resume_from, unless this
    run (run_id) has committed a strictly newer checkpoint before it failed; debris of
    the interrupted checkpoint is this run's staging dirs only."""
    from genai.train.resume import resume_source

    root, other = tmp_path / "run", tmp_path / "donor"
    for step, run_id, where in ((4, "old", root), (4, "donor", other), (6, "r1", root)):
        staging = ckpt.staging_dir(where, step, run_id)
        _fake_checkpoint(staging, step)
        meta = ckpt.read_meta(staging)
        ckpt.write_meta(staging, meta.model_copy(update={"run_id": run_id}))
        ckpt.commit(staging, where, step, keep=5)
    donor = other / "step-000004"
    config = {"run_id": "r1", "resume_from": str(donor)}
    assert resume_source(config, root) == root / "step-000006"  # own, newer than asked
    assert resume_source({"run_id": "r2", "resume_from": str(donor)}, root) == donor
    assert resume_source({"run_id": "r2", "resume_from": None}, root) is None  # fresh run
    assert ckpt.latest_of_run(root, "old") == root / "step-000004"
    _fake_checkpoint(ckpt.staging_dir(root, 8, "r1"), 8)
    _fake_checkpoint(ckpt.staging_dir(root, 8, "r9"), 8)
    assert [p.name for p in ckpt.clean_staging(root, "r1")] == [".step-000008.tmp-r1"]
    assert (root / ".step-000008.tmp-r9").is_dir()  # another run's staging is not ours


def test_commit_is_atomic_and_latest_moves(tmp_path):
    root = tmp_path / "ckpts"
    root.mkdir()
    # a crashed write: a staging dir that even has meta.json is never picked
    _fake_checkpoint(ckpt.staging_dir(root, 9, "dead"), 9)
    assert ckpt.find_latest(root) is None
    for step in (1, 2, 3):
        staging = ckpt.staging_dir(root, step, "run")
        _fake_checkpoint(staging, step)
        final = ckpt.commit(staging, root, step, keep=2)
        assert (root / "latest").resolve() == final.resolve()
    assert [p.name for p in ckpt.list_checkpoints(root)] == ["step-000002", "step-000003"]
    assert ckpt.resolve(root) == ckpt.resolve(root / "latest") == (root / "step-000003").resolve()
    ckpt.clean_staging(root)
    assert not any(p.name.startswith(".step-") for p in root.iterdir())
    # a step dir without weights is not a checkpoint
    (root / "step-000004").mkdir()
    (root / "step-000004" / ckpt.META).write_text("{}")
    assert ckpt.find_latest(root).name == "step-000003"
    with pytest.raises(ckpt.CheckpointError, match="not a complete genai checkpoint"):
        ckpt.resolve(root / "step-000004")


def _tiny_lm(arch: str = "gpt2"):
    torch.manual_seed(0)
    spec = ModelSpec(arch=arch, n_layer=2, n_embd=32, n_head=4, max_position=64)
    return build_lm(spec, vocab_size=60, eos_id=0).eval()


def test_generate_uses_cache_and_is_seeded():
    model = _tiny_lm()
    a = generate(model, [1, 2, 3], Sampling(10, temperature=1.0, seed=7))
    b = generate(model, [1, 2, 3], Sampling(10, temperature=1.0, seed=7))
    assert a.tokens == b.tokens and a.finish_reason in ("length", "stop")
    greedy = generate(model, [1, 2, 3], Sampling(5, temperature=0.0))
    # greedy with the KV cache matches a full forward over the growing sequence
    ids = [1, 2, 3]
    for _ in greedy.tokens:
        ids.append(int(model(torch.tensor([ids])).logits[0, -1].argmax()))
    assert ids[3 : 3 + len(greedy.tokens)] == greedy.tokens


@pytest.mark.parametrize(("arch", "lean"), [("gpt2", True), ("gpt2", False), ("llama", False)])
def test_batched_decoding_matches_each_sequence_decoded_alone(arch, lean):
    """Sequences of different prompt lengths, joining a running batch at different steps,
    with their own seeds and settings, give the tokens each gives alone (decoded by
    transformers' own forward: the lean GPT-2 pass is held to it too)."""
    model = _tiny_lm(arch)
    prompts = [[1, 2, 3], [4] * 9, [8, 9], [10, 11, 12, 13, 14, 15]]
    settings = [
        Sampling(12, temperature=1.0, top_p=0.9, seed=1),
        Sampling(12, temperature=0.0),
        Sampling(5, temperature=0.7, seed=3),
        Sampling(12, temperature=1.2, top_p=0.5, seed=4),
    ]
    alone = [
        generate(model, p, s, lean=False).tokens for p, s in zip(prompts, settings, strict=True)
    ]
    dec = BatchDecoder(model, eos_id=None, max_batch_size=8, lean=lean)
    assert (dec.forward is model) != lean
    gens = [dec.submit(Generation(p, s)) for p, s in zip(prompts[:2], settings[:2], strict=True)]
    for _ in range(3):
        dec.step()
    gens.append(dec.submit(Generation(prompts[2], settings[2])))
    for _ in range(4):
        dec.step()
    gens.append(dec.submit(Generation(prompts[3], settings[3])))
    sizes = []
    while dec.busy:
        dec.step()
        sizes.append(len(dec.rows))
    assert [g.tokens for g in gens] == alone
    assert max(sizes) >= 2  # they really shared forward passes
    assert [g.finish_reason for g in gens] == ["length"] * 4


def test_lean_forward_gives_transformers_logits(monkeypatch):
    """Left-padded prefill, then decode steps past a buffer's spare room, row for row."""
    from genai.decoding.fastpath import LayerKV, lean_forward

    monkeypatch.setattr(LayerKV, "GROW", 8)
    model = _tiny_lm()
    lean = lean_forward(model)
    assert lean is not None and lean_forward(_tiny_lm("llama")) is None
    ids = torch.randint(1, 60, (3, 7), generator=torch.Generator().manual_seed(0))
    mask = torch.ones(3, 7, dtype=torch.long)
    mask[0, :3] = 0
    mask[1, :1] = 0
    pos = (mask.cumsum(1) - 1).clamp_min(0)
    with torch.inference_mode():
        ref = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True)
        out = lean(ids, mask, pos)
        torch.testing.assert_close(out.logits[mask.bool()], ref.logits[mask.bool()])
        for _ in range(LayerKV.GROW + 3):  # the buffers grow once on the way
            nxt = ref.logits[:, -1:].argmax(-1)
            pos = mask.sum(1, keepdim=True)
            mask = torch.cat([mask, torch.ones(3, 1, dtype=torch.long)], 1)
            ref = model(input_ids=nxt, attention_mask=mask, position_ids=pos, cache=ref.cache)
            out = lean(nxt, mask, pos, cache=out.cache)
            torch.testing.assert_close(out.logits, ref.logits, rtol=1e-4, atol=1e-4)


def test_batch_size_and_token_budget_queue_the_rest():
    model = _tiny_lm()
    dec = BatchDecoder(model, eos_id=None, max_batch_size=2, max_batch_tokens=40)
    gens = [dec.submit(Generation([1, 2], Sampling(8, seed=i))) for i in range(3)]
    big = dec.submit(Generation([1] * 20, Sampling(30, seed=9)))  # 50 > the whole budget
    dec.step()
    assert len(dec.rows) == 2 and dec.queued == 2
    dec.run_until_idle()
    assert all(g.finish_reason == "length" for g in [*gens, big]) and len(big.tokens) == 30


def test_cancelled_sequence_frees_its_row_at_the_next_step():
    model = _tiny_lm()
    dec = BatchDecoder(model, eos_id=None)
    a = dec.submit(Generation([1, 2], Sampling(30, seed=1)))
    b = dec.submit(Generation([3, 4], Sampling(30, seed=2)))
    dec.step()
    a.cancel()
    dec.step()
    assert dec.rows == [None, b] and dec.active == 1 and not a.finished
    c = dec.submit(Generation([5, 6], Sampling(3, seed=3)))
    dec.step()  # the new sequence takes the free row: no copy of the cache
    assert dec.rows == [c, b] and dec.counts["compactions"] == 0
    dec.run_until_idle()
    assert len(b.tokens) == 30 and len(a.tokens) < 30 and len(c.tokens) == 3
    assert c.tokens == generate(model, [5, 6], Sampling(3, seed=3)).tokens


def test_a_completion_ending_on_its_first_token_is_counted():
    """EOS as the first token leaves no completion tokens; Ray's Counter.inc(0) raises,
    which once turned such a completion into a 500 (CI, stop 12)."""
    from genai.families.lm import metrics
    from genai.serve.api import count

    model = _tiny_lm()
    eos = int(model(torch.tensor([[1, 2, 3]])).logits[0, -1].argmax())
    gen = generate(model, [1, 2, 3], Sampling(5, temperature=0.0), eos_id=eos)
    assert gen.tokens == [] and gen.finish_reason == "stop"
    with pytest.raises(ValueError):
        metrics.tokens_total().inc(0, tags={"model": "m", "kind": "completion"})
    count(metrics.tokens_total(), len(gen.tokens), {"model": "m", "kind": "completion"})


def test_stop_text_holds_back_what_a_stop_string_may_take():
    pieces = ["ab", "c", "X", "Y", "de"]

    def decode(ids):
        return "".join(pieces[i] for i in ids)

    t = StopText(decode, ["XYZ", "de"])
    out = [t.update(list(range(n))) for n in range(1, 6)]
    assert "".join(out) == "abcXY" and t.stopped and t.text == "abcXY"
    assert out[0] == ""  # 'ab' might begin 'XYZ'? no, but 2 chars are held back
    u = StopText(decode, ["Q"])
    assert "".join(u.update(list(range(n))) for n in range(1, 6)) == "abcXYde"


def test_served_context_is_the_trained_length(tmp_path):
    """Positions past the training seq_len were never trained: the server stops there."""
    from types import SimpleNamespace

    from genai.families.lm.serving import LoadedLM

    model = _tiny_lm()  # max_position 64
    lm = LoadedLM("m", tmp_path, SimpleNamespace(spec={"data": {"seq_len": 32}}), model, None)
    assert lm.context == 32
    lm.meta = SimpleNamespace(spec={"data": {"seq_len": 64}})
    assert lm.context == 64


def test_top_p_keeps_the_nucleus():
    logits = torch.log(torch.tensor([[0.6, 0.3, 0.05, 0.05]])).repeat(400, 1)
    u = torch.rand(400, generator=torch.Generator().manual_seed(0))
    one = torch.ones(400)
    assert set(sample_rows(logits, one, one * 0.5, u).tolist()) == {0}
    assert set(sample_rows(logits, one, one * 0.85, u).tolist()) == {0, 1}
    assert set(sample_rows(logits, one * 0, one, u).tolist()) == {0}  # greedy


def test_llama_architecture_builds_and_trains_a_step():
    spec = ModelSpec(arch="llama", n_layer=2, n_embd=32, n_head=4, n_kv_head=2, max_position=64)
    model = build_lm(spec, vocab_size=100, eos_id=0)
    assert type(model).__name__ == "LlamaForCausalLM" and model.config.num_key_value_heads == 2
    ids = torch.randint(0, 100, (2, 16))
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    assert torch.isfinite(loss) and model.model.embed_tokens.weight.grad is not None


def test_serving_imports_no_training_code():
    """The checkpoint contract's promise: serving never imports genai.train (nor DeepSpeed)."""
    import subprocess
    import sys

    code = (
        "import sys, genai.serve.app, genai.serve.run\n"
        "from genai.families import FAMILIES\n"
        "for f in FAMILIES.values(): f.load_server()\n"
        "print(sorted(m for m in sys.modules if m.startswith('genai.train') or m == 'deepspeed'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_reading_a_spec_imports_no_torch():
    """Every command reads a spec first (and the gateway its serve spec): the families'
    sections, model configs included, stay torch-free, so that costs no torch import."""
    import subprocess
    import sys

    code = (
        "import sys, genai.config, genai.serve.spec, genai.tune.spec\n"
        "from genai.families import FAMILIES\n"
        "print(len(FAMILIES), 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split()[1] == "False", out.stdout


def test_api_keys_have_names_limits_and_clear_errors(tmp_path):
    from genai.serve.keys import KeyRing, digest, load_keys

    f = tmp_path / "keys.yaml"
    f.write_text("carol: {key: sk-carol-0003, requests_per_minute: 60}\ndave: sk-dave-00004\n")
    env = {"K": "alice:sk-alice-0001, sk-bare-key-05"}
    keys = load_keys("K", str(f), default_rpm=0, environ=env)
    names = [k.name for k in keys]
    assert names[:1] == ["alice"] and names[1].startswith("key-") and names[2:] == ["carol", "dave"]
    assert all("sk-" not in str(k) for k in keys)  # digests only
    assert keys[0].digest == digest("sk-alice-0001")
    ring = KeyRing([k.__dict__ for k in keys])
    assert ring.identify("sk-carol-0003").name == "carol" and ring.identify("sk-nope-000") is None
    carol = ring.identify("sk-carol-0003")
    # 60/min: a burst of 10, then one a second
    assert [ring.retry_after(carol, now=100.0) for _ in range(10)] == [0.0] * 10
    assert ring.retry_after(carol, now=100.0) == pytest.approx(1.0)
    assert ring.retry_after(carol, now=101.0) == 0.0
    assert ring.retry_after(ring.identify("sk-dave-00004"), now=100.0) == 0.0  # no limit
    for bad_env, match in [
        ({"K": "a:sk-one-00001,a:sk-two-00002"}, "repeated: a"),
        ({"K": "a:short"}, "shorter than 8"),
        ({"K": "a:"}, "needs a name and a key"),
    ]:
        with pytest.raises(ValueError, match=match):
            load_keys("K", None, environ=bad_env)
    with pytest.raises(ValueError, match="does not exist"):
        load_keys("K", str(tmp_path / "missing.yaml"), environ={})


def test_serve_deploy_file_is_a_valid_serve_config_with_typed_args():
    """serve/deploy.yaml passes Ray Serve's own schema, and its args are app_builder's."""
    import pydantic
    import yaml
    from ray.serve.schema import ServeDeploySchema

    from genai.serve.app import AppArgs, app_builder

    raw = yaml.safe_load((Path(__file__).parent.parent / "serve/deploy.yaml").read_text())
    config = ServeDeploySchema.model_validate(raw)
    assert config.http_options.host == "127.0.0.1"  # shipped configs bind loopback only
    (app,) = config.applications
    assert app.import_path == "genai.serve.app:app_builder"
    args = AppArgs.model_validate(app.args)
    assert args.config == "serve/lm.yaml" and len(args.checkpoints) == 3
    with pytest.raises(pydantic.ValidationError, match="checkpointz"):
        AppArgs.model_validate({"checkpointz": []})
    with pytest.raises(ValueError, match="checkpoints is empty"):
        app_builder(AppArgs(config=str(Path(__file__).parent.parent / "serve/lm.yaml")))


# ------------------------------------------------------------------ generation log

_KILLED_WRITER = """
import sys, time
from types import SimpleNamespace
from genai.serve.genlog import GenerationLog
spec = SimpleNamespace(mode=sys.argv[2], save_images=False, flush_s=0.05, rotate_s=0.5, rotate_mb=64,
                       dir=sys.argv[1])
log = GenerationLog(spec, "replica-x")
i = 0
while True:  # records until SIGKILLed, mid-file; each one's index and time on stdout
    now = time.time()
    log.record({"id": f"cmpl-{i:024x}", "time": now, "status": 200, "prompt": "p", "output": "o"})
    print(i, now, flush=True)
    i += 1
    time.sleep(0.01)
"""


@pytest.mark.parametrize("mode", ["full", "metadata"])
def test_generation_log_survives_a_kill_and_honours_its_mode(tmp_path, mode):
    """A SIGKILLed writer leaves complete Parquet files plus its open stream file: reading
    both loses only the records of the last flush_s (plus the kill's own latency), none
    twice. Metadata mode keeps no prompts or outputs."""
    import signal
    import subprocess
    import sys
    import time

    from genai.serve import genlog

    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, str(tmp_path), mode],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 60
        while len(list(tmp_path.glob("generations-*.parquet"))) < 2 and time.time() < deadline:
            time.sleep(0.1)
        time.sleep(0.2)  # into the next file (files rotate every 0.5 s)
    finally:
        killed_at = time.time()
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate()
    assert list(tmp_path.glob("generations-*.arrows")), "no open file at the kill"
    table, skipped = genlog.read(tmp_path)
    assert not skipped
    ids = table["id"].to_pylist()
    assert len(ids) == len(set(ids)) and ids == sorted(ids)  # in order, none twice
    logged = [line.split() for line in out.splitlines()]
    # every record made more than flush_s (+ 0.25 s of scheduling on a loaded machine)
    # before the kill is on disk
    must = {f"cmpl-{int(i):024x}" for i, t in logged if float(t) < killed_at - 0.05 - 0.25}
    assert must and must <= set(ids), len(must - set(ids))
    rows = table.to_pylist()
    if mode == "full":
        assert {(r["prompt"], r["output"]) for r in rows} == {("p", "o")}
    else:
        assert {(r["prompt"], r["output"]) for r in rows} == {(None, None)}
    assert {r["replica"] for r in rows} == {"replica-x"} and rows[0]["score"] is None

    # the next writer on the directory turns the orphaned stream into Parquet
    from genai.serve.genlog import RecordLog
    from genai.serve.routes import log_fields

    for path in tmp_path.glob("generations-*.arrows"):
        os.utime(path, (time.time() - 120, time.time() - 120))
    RecordLog(
        tmp_path, "generations", genlog.generations_schema(log_fields()), rotate_s=0.5
    ).close()
    assert not list(tmp_path.glob("generations-*.arrows"))
    assert genlog.read(tmp_path)[0]["id"].to_pylist() == ids


def test_a_source_renamed_to_the_same_checkpoint_is_kept_with_its_new_source(tmp_path):
    """apply(): a model whose configured source changes (a step dir, then the `latest` link
    to it) but resolves to the directory it already serves keeps its server, and remembers
    the new source for the watcher."""
    from types import SimpleNamespace

    from genai.serve.registry import Registry, Served

    step = tmp_path / "checkpoints" / "step-000001"
    step.mkdir(parents=True)
    ckpt.write_meta(step, ckpt.Meta(step=1, name="m", family="lm", spec={}, spec_hash="h"))
    (step / ckpt.WEIGHTS).write_bytes(b"")
    (tmp_path / "checkpoints" / "latest").symlink_to(step.name)
    server = SimpleNamespace(close=lambda: None)
    reg = Registry(spec=None)
    reg._put(Served(str(step), step.resolve(), "lm", "h", server, {"id": "m", "step": 1}))

    reg.apply([(None, str(tmp_path / "checkpoints" / "latest"))])

    kept = reg.served["m"]
    assert kept.source == str(tmp_path / "checkpoints" / "latest")
    assert kept.server is server and kept.spec_hash == "h" and kept.directory == step.resolve()
    assert reg.servers["m"] is server and not reg.refused


def test_code_runs_on_the_oldest_python_pyproject_allows():
    """requires-python, ruff's target and the code agree: vermin finds no syntax or stdlib
    API newer than the floor (datetime.UTC, tomllib, ... are 3.11)."""
    import re
    import subprocess
    import sys

    import tomllib  # novermin: the test runs on 3.11+

    root = Path(__file__).resolve().parent.parent
    project = tomllib.loads((root / "pyproject.toml").read_text())
    floor = re.fullmatch(r">=\s*3\.(\d+)", project["project"]["requires-python"]).group(1)
    assert project["tool"]["ruff"]["target-version"] == f"py3{floor}"
    vermin = Path(sys.executable).parent / "vermin"
    r = subprocess.run(
        [str(vermin), f"--target=3.{floor}-", "--no-tips", "--violations"]
        + [str(root / d) for d in ("genai", "tests", "bench")],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout[-3000:]


def test_benchmarks_compare_like_with_like_and_name_the_cpu(monkeypatch):
    """bench/train_throughput.py follows `precision: auto` on both sides (emulated bf16 is
    tens of times slower: those rows never finished on a CPU without it), and every
    benchmark starts its output with the CPU and whether it computes bf16 natively."""
    import ast

    from bench.train_throughput import precisions
    from genai import hardware

    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: False)
    assert precisions("auto") == ["fp32"]
    assert "bf16 emulated" in hardware.machine_line()
    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: True)
    assert precisions("auto") == ["bf16"] and "bf16 native" in hardware.machine_line()
    assert precisions("all") == ["fp32", "bf16"]

    bench = Path(__file__).resolve().parent.parent / "bench"
    for path in sorted(bench.glob("*.py")):
        tree = ast.parse(path.read_text())
        mains = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "main"]
        # gpu_pins lists wheel pins and module_task writes a dataset: no figures
        if not mains or path.name in ("gpu_pins.py", "module_task.py"):
            continue
        calls = {
            n.func.id
            for n in ast.walk(mains[0])
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
        }
        assert "machine_line" in calls, f"{path.name} does not print machine_line()"
