"""DeepSpeed config generation, LR schedule, checkpoint commit rules, sampling."""

from __future__ import annotations

import json

import pytest
import torch

from genai import checkpoint as ckpt
from genai.config import DeepSpeedSpec, ModelSpec, TrainSpec
from genai.models.transformer import _sample, build_lm, generate
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


def test_generate_uses_cache_and_is_seeded():
    torch.manual_seed(0)
    model = build_lm(
        ModelSpec(n_layer=1, n_embd=16, n_head=2, max_position=64), vocab_size=50, eos_id=0
    ).eval()
    a = generate(model, [1, 2, 3], 10, temperature=1.0, seed=7)
    b = generate(model, [1, 2, 3], 10, temperature=1.0, seed=7)
    assert a.tokens == b.tokens and a.finish_reason in ("length", "stop")
    greedy = generate(model, [1, 2, 3], 5, temperature=0.0)
    # greedy with the KV cache matches a full forward over the growing sequence
    ids = [1, 2, 3]
    for _ in greedy.tokens:
        ids.append(int(model(torch.tensor([ids])).logits[0, -1].argmax()))
    assert ids[3 : 3 + len(greedy.tokens)] == greedy.tokens


def test_top_p_keeps_the_nucleus():
    logits = torch.log(torch.tensor([0.6, 0.3, 0.05, 0.05]))
    gen = torch.Generator().manual_seed(0)
    picks = {_sample(logits, 1.0, 0.5, gen) for _ in range(200)}
    assert picks == {0}  # top_p 0.5: only the 0.6 token is in the nucleus
    picks = {_sample(logits, 1.0, 0.85, gen) for _ in range(400)}
    assert picks == {0, 1}


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
        "for f in FAMILIES.values(): f.load('deployment')\n"
        "print(sorted(m for m in sys.modules if m.startswith('genai.train') or m == 'deepspeed'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
