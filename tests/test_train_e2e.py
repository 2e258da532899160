"""Real Ray Train + DeepSpeed runs on the CPU (gloo): checkpoints, ZeRO-3 export, resume, kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file

from genai import checkpoint as ckpt
from genai.config import parse_job
from tests.support import kill_after_first_checkpoint, resume, start_and_wait_for_checkpoint

pytestmark = pytest.mark.e2e


def _ranks_with_optimizer_shards(step_dir):
    return {p.name for p in (step_dir / "deepspeed").rglob("*zero_pp_rank_*optim_states.pt")}


def test_zero2_two_workers_write_complete_checkpoints(ray_session, tiny_raw):
    from genai.train.run import train

    spec = parse_job(tiny_raw())
    final = train(spec)
    root = spec.checkpoint_dir
    assert [p.name for p in ckpt.list_checkpoints(root)] == ["step-000003", "step-000006"]
    assert final == root / "step-000006" and (root / "latest").resolve() == final.resolve()
    meta = ckpt.read_meta(final)
    assert meta.step == 6 and meta.name == "tiny" and meta.world_size == 2
    assert meta.deepspeed_config["model"]["zero_optimization"]["stage"] == 2
    assert {"torch", "deepspeed", "ray", "transformers"} <= set(meta.versions)
    assert [h["step"] for h in meta.history] == [0, 3, 6]
    assert meta.metrics["tokens_per_s"] > 0 and meta.metrics["val_loss"] > 0
    # every rank's shards, for exact resume
    assert len(_ranks_with_optimizer_shards(final)) == 2
    assert (final / "tokenizer.json").is_file() and (final / "config.json").is_file()
    assert not any(p.name.startswith(".step-") for p in root.iterdir())
    # the dataset it trained on: a version id, and the manifest's own copy inside it
    from genai.data import manifest
    from genai.data.tokens import CacheMeta

    version = meta.export["dataset"]["version"]
    table = pq.read_table(final / ckpt.DATASET)
    assert manifest.version_id(table) == version
    splits = table.column("split").to_pylist()
    cache = [d for d in Path(spec.data.cache_dir).glob("text-*") if (d / "meta.json").is_file()]
    prepared = next(CacheMeta.read(d) for d in cache if CacheMeta.read(d).dataset == version)
    assert splits.count("train") == prepared.documents["train"] > 0
    assert splits.count("val") == prepared.documents["val"] > 0
    # a second run without --resume/--fresh refuses to mix with these checkpoints
    with pytest.raises(ValueError, match="pass --resume to continue or --fresh"):
        train(spec)


def test_cli_train_joins_a_running_ray(ray_address, tiny_raw, tmp_path):
    """`genai train SPEC --address`: the CLI as a user runs it against a cluster."""
    raw = tiny_raw(name="tiny-cli", scaling={"num_workers": 1}, train={"max_steps": 3})
    spec_path = tmp_path / "job.json"
    spec_path.write_text(json.dumps(raw))  # JSON is YAML
    r = subprocess.run(
        [sys.executable, "-m", "genai", "train", str(spec_path), "--address", ray_address],
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    final = ckpt.find_latest(parse_job(raw).checkpoint_dir)
    assert r.stdout.strip().splitlines()[-1] == f"checkpoint: {final}"
    assert ckpt.read_meta(final).step == 3 and ckpt.read_meta(final).world_size == 1


def test_a_batch_larger_than_the_data_is_refused_before_a_worker_starts(ray_session, tiny_raw):
    """The driver knows the training set's size once the data is prepared: the error is
    the spec's one line, raised before a worker group is started for nothing."""
    from genai.config import SpecError
    from genai.train.run import train

    spec = parse_job(tiny_raw(name="tiny-big", train={"micro_batch_size": 100_000}))
    with pytest.raises(SpecError) as info:
        train(spec)
    assert str(info.value).endswith(
        "training items; need at least train.micro_batch_size*scaling.num_workers=200000"
    )
    assert not (spec.checkpoint_dir.parent / "ray").exists()  # no Train run was started


def test_zero3_checkpoint_loads_in_transformers(zero3_checkpoint):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    meta = ckpt.read_meta(zero3_checkpoint)
    assert meta.deepspeed_config["model"]["zero_optimization"]["stage"] == 3
    assert len(_ranks_with_optimizer_shards(zero3_checkpoint)) == 2
    model = AutoModelForCausalLM.from_pretrained(zero3_checkpoint)
    tok = AutoTokenizer.from_pretrained(zero3_checkpoint)
    tensors = load_file(zero3_checkpoint / ckpt.WEIGHTS)
    assert len(tensors) == meta.export["n_tensors"] > 0
    # the consolidated weights are the real ones, not ZeRO-3's empty partitions
    sd = model.state_dict()
    for name, t in tensors.items():
        assert t.numel() > 0 and torch.equal(sd[name].to(t.dtype), t), name
    ids = tok("import os\n", return_tensors="pt")["input_ids"]
    out = model.generate(ids, max_new_tokens=5, do_sample=False, pad_token_id=tok.eos_token_id)
    assert out.shape[1] == ids.shape[1] + 5


def test_resume_reproduces_the_uninterrupted_run(ray_session, tiny_raw):
    """Lose the step-6 checkpoint, resume from step 3: the weights at step 6 come out the same."""
    from genai.train.run import train

    spec = parse_job(tiny_raw(name="tiny-resume", deepspeed={"precision": "fp32"}))
    straight = train(spec)
    reference = load_file(straight / ckpt.WEIGHTS)
    ref_meta = ckpt.read_meta(straight)
    # simulate a crash after the step-3 checkpoint
    step3 = spec.checkpoint_dir / "step-000003"
    os.rename(straight, spec.checkpoint_dir / ".lost")
    (spec.checkpoint_dir / "latest").unlink()
    assert ckpt.find_latest(spec.checkpoint_dir) == step3

    resumed = train(spec, resume=True)
    meta = ckpt.read_meta(resumed)
    assert meta.step == 6
    assert meta.run_id == ref_meta.run_id  # --resume continues the same training run
    assert [h["step"] for h in meta.history] == [
        0,
        3,
        6,
    ]  # history continues; no second step-0 eval
    assert meta.metrics["lr"] == pytest.approx(ref_meta.metrics["lr"])  # LR schedule restored
    assert meta.metrics["val_loss"] == pytest.approx(ref_meta.metrics["val_loss"], rel=1e-5)
    again = load_file(resumed / ckpt.WEIGHTS)
    for name, t in reference.items():
        torch.testing.assert_close(again[name], t, rtol=1e-5, atol=1e-6, msg=name)
    # already at max_steps: --resume does nothing and says so
    assert train(spec, resume=True) == resumed


@pytest.mark.full
def test_sigkill_of_the_driver_then_resume(tmp_path, tiny_raw):
    """Kill `genai train` with SIGKILL mid-run; `--resume` continues from the last checkpoint."""
    raw = tiny_raw(
        name="tiny-kill",
        train={"max_steps": 400, "log_every": 20, "eval_every": 200},
        checkpoint={"every_steps": 10},
    )
    spec_path = tmp_path / "job.json"
    spec_path.write_text(json.dumps(raw))  # JSON is YAML
    root = parse_job(raw).checkpoint_dir
    cmd, killed_at = kill_after_first_checkpoint(spec_path, root)
    assert 10 <= killed_at < 400
    r = resume(cmd, killed_at + 20)
    assert f"at step {killed_at}" in r.stdout + r.stderr
    final = ckpt.find_latest(root)
    assert r.stdout.strip().splitlines()[-1] == f"checkpoint: {final}"
    meta = ckpt.read_meta(final)
    assert meta.step == killed_at + 20 and meta.history[0]["step"] == 0
    assert not any(p.name.startswith(".step-") for p in root.iterdir())  # staging debris cleaned


@pytest.mark.full  # out of make test's 10 minutes: see tests/test_tiers.py
def test_optimizer_offload_and_fine_tuning_a_pretrained_checkpoint(
    ray_session, tiny_raw, zero3_checkpoint
):
    """ZeRO-2 with the optimizer on the CPU, starting from a local from_pretrained dir + its tokenizer."""
    from genai.train.run import train

    raw = tiny_raw(
        name="tiny-ft",
        model={"pretrained_path": str(zero3_checkpoint)},
        data={"tokenizer": {"path": str(zero3_checkpoint)}},
        deepspeed={"zero_stage": 2, "offload_optimizer": True},
        train={"max_steps": 3, "eval_every": 3},
    )
    final = train(parse_job(raw))
    meta = ckpt.read_meta(final)
    assert (
        meta.deepspeed_config["model"]["zero_optimization"]["offload_optimizer"]["device"] == "cpu"
    )
    assert meta.n_params == ckpt.read_meta(zero3_checkpoint).n_params
    # fine-tuning starts from the trained weights, not from scratch: its step-0 loss is the parent's
    parent_last = ckpt.read_meta(zero3_checkpoint).history[-1]["val_loss"]
    assert meta.history[0]["val_loss"] < parent_last + 0.5


@pytest.mark.full
def test_ctrl_c_stops_the_run_cleanly_and_names_the_checkpoint(tmp_path, tiny_raw):
    """SIGINT (Ctrl-C) to the driver: Ray Train aborts the workers, genai exits 130 with one line."""
    raw = tiny_raw(
        name="tiny-int",
        train={"max_steps": 400, "log_every": 20, "eval_every": 200},
        checkpoint={"every_steps": 10},
    )
    spec_path = tmp_path / "job.json"
    spec_path.write_text(json.dumps(raw))
    root = parse_job(raw).checkpoint_dir
    proc = start_and_wait_for_checkpoint(
        spec_path, root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130
    last = err.strip().splitlines()[-1]
    latest = ckpt.find_latest(root)
    assert (
        last == f"genai: training interrupted; latest checkpoint {latest}; continue with --resume"
    )
    assert ckpt.read_meta(latest).step < 400
