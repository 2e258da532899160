"""Job and serve specs: every shipped spec validates; broken ones fail naming the key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from genai.config import SpecError, load_job, parse_job
from genai.serve.spec import load_serve

ROOT = Path(__file__).resolve().parent.parent


JOBS = sorted(p for p in (ROOT / "jobs").glob("*.yaml") if not p.name.startswith("tune-"))


@pytest.mark.parametrize("path", JOBS, ids=lambda p: p.name)
def test_every_job_spec_validates(path):
    spec = load_job(path)
    assert spec.name == path.stem
    assert spec.train.warmup_steps < spec.train.max_steps


# deploy.yaml is Ray Serve's own config format (checked in test_units against Serve's schema)
SERVE_SPECS = sorted(p for p in (ROOT / "serve").glob("*.yaml") if p.name != "deploy.yaml")


@pytest.mark.parametrize("path", SERVE_SPECS, ids=lambda p: p.name)
def test_every_serve_config_validates(path):
    spec = load_serve(path)
    assert spec.host == "127.0.0.1"  # shipped configs never bind beyond loopback


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"train": {"lr": -1}}, "train.lr must be > 0.0, got -1"),
        ({"train": {"max_steps": "100"}}, "train.max_steps must be an integer, got '100'"),
        ({"train": {"lrate": 0.1}}, "unknown key train.lrate"),
        ({"bogus": {}}, "unknown key bogus"),
        (
            {"deepspeed": {"zero_stage": 4}},
            "deepspeed.zero_stage must be one of 0, 1, 2 or 3, got 4",
        ),
        (
            {"deepspeed": {"precision": "fp16"}},
            "deepspeed.precision must be one of 'auto', 'bf16' or 'fp32', got 'fp16'",
        ),
        (
            {"train": {"warmup_steps": 500, "max_steps": 100}},
            "train.warmup_steps (500) must be < train.max_steps (100)",
        ),
        ({"data": {"seq_len": 4096}}, "data.seq_len (4096) must be <= model.max_position (512)"),
        ({"model": {"n_embd": 250}}, "model.n_embd (250) must be divisible by model.n_head (4)"),
        (
            {"deepspeed": {"offload_optimizer": True, "zero_stage": 0}},
            "deepspeed.offload_optimizer needs",
        ),
        ({"scaling": {"num_workers": 0}}, "scaling.num_workers must be >= 1, got 0"),
    ],
)
def test_bad_spec_names_the_key(override, message):
    with pytest.raises(SpecError) as exc:
        parse_job({"name": "x", **override})
    assert str(exc.value).startswith(message)
    assert "\n" not in str(exc.value)


def test_overrides_parse_yaml_values(tmp_path):
    p = tmp_path / "job.yaml"
    p.write_text("name: j\ntrain: {max_steps: 10, warmup_steps: 1}\n")
    spec = load_job(
        p,
        [
            "train.max_steps=200",
            "train.lr=3e-4",
            "deepspeed.offload_optimizer=true",
            "data.include=[a, b]",
        ],
    )
    assert spec.train.max_steps == 200 and spec.train.lr == 3e-4
    assert spec.deepspeed.offload_optimizer is True and spec.data.include == ["a", "b"]
    with pytest.raises(SpecError, match="must look like dotted.key=value"):
        load_job(p, ["train.max_steps"])
    with pytest.raises(SpecError, match=r"train.max_steps is not a mapping"):
        load_job(p, ["train.max_steps.x=1"])


def test_spec_hash_tracks_content():
    a, b = parse_job({"name": "x"}), parse_job({"name": "x", "train": {"lr": 0.01}})
    assert a.spec_hash() == parse_job({"name": "x"}).spec_hash() != b.spec_hash()


@pytest.mark.parametrize(
    ("content", "args", "needle"),
    [
        ("name: j\ntrain: {lr: -1}\n", [], "train.lr must be > 0"),
        ("name: j\ntrain: {max_steps: ten}\n", [], "train.max_steps must be an integer"),
        ("name: j\ntrian: {}\n", [], "unknown key trian"),
        ("name: j\n", ["--set", "deepspeed.zero_stage=7"], "deepspeed.zero_stage must be one of"),
        ("name: [j\n", [], "invalid YAML at line"),
    ],
)
def test_cli_bad_spec_exits_nonzero_with_one_line(tmp_path, content, args, needle):
    p = tmp_path / "job.yaml"
    p.write_text(content)
    r = subprocess.run(
        [sys.executable, "-m", "genai.cli", "train", str(p), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("genai: error: ") and needle in lines[0]


def test_cli_print_spec_applies_overrides():
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "genai.cli",
            "train",
            str(ROOT / "jobs/lm-tiny.yaml"),
            "--set",
            "train.max_steps=77",
            "--print-spec",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert '"max_steps": 77' in r.stdout


def test_serve_config_errors_are_prefixed():
    with pytest.raises(
        SpecError,
        match=r"serve.autoscaling.min_replicas \(3\) must be <= serve.autoscaling.max_replicas",
    ):
        load_serve(None, ["autoscaling.min_replicas=3", "autoscaling.max_replicas=2"])
    with pytest.raises(SpecError, match="serve.port must be <= 65535"):
        load_serve(None, ["port=70000"])


def test_a_bare_off_in_yaml_is_the_off_mode():
    # YAML 1.1 reads `off` as false; the generation log's mode means the word
    assert load_serve(None, ["generation_log.mode=off"]).generation_log.mode == "off"
    with pytest.raises(SpecError, match="serve.generation_log.mode must be one of"):
        load_serve(None, ["generation_log.mode=true"])
