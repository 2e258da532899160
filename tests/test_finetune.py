"""Fine-tuning a pretrained LM, without Ray: import, chat rendering and assistant-only
labels, packing without cross-conversation attention, adapters mixed in one decode batch,
and log-probabilities against a plain forward pass."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import torch

from genai import checkpoint as ckpt
from genai.testing.adapters import random_adapter
from tests.support import chat_jsonl, tiny_llama_dir


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A tiny random Llama saved by Hugging Face, imported with `genai import`."""
    from genai.cli import main

    root = tmp_path_factory.mktemp("base")
    tiny_llama_dir(root / "hf")
    assert main(["import", str(root / "hf"), "--out", str(root / "base")]) == 0
    return root / "base"


def test_import_of_a_hugging_face_directory_makes_a_servable_checkpoint(base, tmp_path):
    from transformers import AutoModelForCausalLM

    from genai.families.lm.serving import load_lm

    meta = ckpt.read_meta(base)
    assert meta.family == "lm" and meta.name == "base" and meta.step == 0
    lineage = meta.lineage
    assert isinstance(lineage, ckpt.ImportLineage) and lineage.format == "hf"
    weights = sorted((base.parent / "hf").glob("*.safetensors"))
    assert lineage.sha256 == ckpt.file_sha256(*weights)
    assert meta.export["weights_sha256"] == ckpt.file_sha256(base / ckpt.WEIGHTS)
    for name in ("config.json", "tokenizer.json", ckpt.WEIGHTS):
        assert (base / name).is_file()
    # same weights as the source, and the chat template kept
    source = AutoModelForCausalLM.from_pretrained(base.parent / "hf")
    loaded = load_lm(base)
    for (k, v), (k2, v2) in zip(
        source.state_dict().items(), loaded.model.state_dict().items(), strict=True
    ):
        assert k == k2 and torch.equal(v, v2), k
    assert loaded.tokenizer.chat_template is not None
    assert loaded.context == 256  # the model's own: no training spec to narrow it

    # a second import over it is refused unless forced; a non-model source names itself
    from genai.cli import main

    assert main(["import", str(base.parent / "hf"), "--out", str(base)]) == 2
    (tmp_path / "notes.txt").write_text("hi")
    assert main(["import", str(tmp_path / "notes.txt"), "--out", str(tmp_path / "x")]) == 2
    assert not (tmp_path / "x").exists()


def test_chat_labels_are_the_assistant_turns_only(base):
    from transformers import AutoTokenizer

    from genai.families.lm.chat import render

    tok = AutoTokenizer.from_pretrained(base)
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is 2 plus 2?"},
        {"role": "assistant", "content": "four"},
        {"role": "user", "content": "And 3 plus 3?"},
        {"role": "assistant", "content": "six"},
    ]
    ids, mask = render(tok, messages)
    assert tok.decode(ids) == tok.apply_chat_template(messages, tokenize=False)
    trained = tok.decode([t for t, m in zip(ids, mask, strict=True) if m])
    # each answer with its end-of-turn marker (the model learns to stop), nothing else
    assert trained == "four<|im_end|>\nsix<|im_end|>\n"


def test_packed_conversations_do_not_attend_to_each_other(base):
    """A block of two packed conversations gives each the logits it has alone: positions
    restart per conversation and transformers masks attention block-diagonally."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from genai.families.lm.chat import IGNORE, pack, render

    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, attn_implementation="sdpa").eval()
    convs = [
        [{"role": "user", "content": "What is 1 plus 1?"}, {"role": "assistant", "content": "two"}],
        [{"role": "user", "content": "Name a color."}, {"role": "assistant", "content": "red"}],
    ]
    docs = [render(tok, c) for c in convs]
    n0, n1 = (len(ids) for ids, _ in docs)
    packed = pack(docs, n0 + n1 + 5, tok.pad_token_id)
    assert packed["input_ids"].shape == (1, n0 + n1 + 5)
    assert (packed["labels"][0, n0 + n1 :] == IGNORE).all()  # padding is never trained
    with torch.no_grad():
        together = model(
            input_ids=torch.from_numpy(packed["input_ids"]).long(),
            position_ids=torch.from_numpy(packed["position_ids"]).long(),
            use_cache=False,  # packing is read from the positions only without a cache
        ).logits[0]
        alone = [model(input_ids=torch.tensor([ids])).logits[0] for ids, _ in docs]
    torch.testing.assert_close(together[:n0], alone[0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(together[n0 : n0 + n1], alone[1], atol=1e-4, rtol=1e-4)
    # one per block when packing is off
    assert pack(docs, n0 + n1, tok.pad_token_id, together=False)["input_ids"].shape[0] == 2


def test_bad_chat_data_names_the_line_and_field(tmp_path):
    from genai.families.lm.chat import read_conversations
    from genai.specbase import SpecError

    good = chat_jsonl(tmp_path / "ok.jsonl", n=3)
    assert len(read_conversations(good)) == 3
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n")
    with pytest.raises(SpecError, match=r"bad.jsonl:1: no assistant message"):
        read_conversations(bad)
    bad.write_text('{"messages": [{"role": "robot", "content": "x"}]}\n')
    with pytest.raises(SpecError, match=r"bad.jsonl:1: messages\[0\].role"):
        read_conversations(bad)


@pytest.fixture(scope="module")
def adapters(base, tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("adapters")
    return [
        random_adapter(base, root / "a1", "a1", seed=1, r=4),
        random_adapter(base, root / "a2", "a2", seed=2, r=8),
    ]


def _servers(base: Path, adapters: list[Path]):
    from genai.families.lm.serving import server
    from genai.serve.spec import ServeSpec

    spec = ServeSpec()
    return [server(d, ckpt.read_meta(d), spec) for d in (base, *adapters)]


def test_a_mixed_adapter_batch_gives_each_row_its_tokens_alone(base, adapters):
    """Rows for the base and two adapters of different ranks decode in one forward pass
    per step (peft's per-row adapter_names) and each gets the very tokens it gets alone."""
    servers = _servers(base, adapters)
    b, a1, a2 = servers
    try:
        assert a1.info()["base"]["sha256"] == b.sha256

        def req(seed: int) -> dict:
            return {"max_tokens": 10, "temperature": 0.9, "top_p": 0.95, "seed": seed}

        async def run(who: list) -> list[list[int]]:
            gens = [s.open(req(i % 3), "What is 1 plus 2?", False) for i, s in enumerate(who)]
            await asyncio.gather(*(s.complete(g) for s, g in zip(who, gens, strict=True)))
            return [g.tokens for g in gens]

        alone = [asyncio.run(run([s]))[0] for s in servers]
        assert len({tuple(t) for t in alone}) == 3  # the adapters change the output
        order = [b, a1, a2, a1, b, a2]
        steps_before = b.decoder.counts["steps"]
        mixed = asyncio.run(run(order))
        assert b.decoder.counts["steps"] - steps_before <= 10 + 1  # together, not in turn
        for who, tokens, i in zip(order, mixed, range(len(order)), strict=True):
            solo = asyncio.run(run([who] * (i % 3 + 1)))[i % 3]
            assert tokens == solo, f"row {i}"
        # a removed adapter is deleted from the model; the base and the other one decode on
        pair = asyncio.run(run([b, a2]))
        a1.close()
        assert set(b.decoder.peft.peft_config) == {a2.key}
        assert asyncio.run(run([b, a2])) == pair
    finally:
        for s in (a2, b):  # adapters before their base
            s.close()


def test_an_adapter_over_other_weights_is_refused(base, tmp_path):
    from genai.cli import main
    from genai.families.lm.adapters import AdapterBaseMismatch

    tiny_llama_dir(tmp_path / "hf", seed=7)
    assert main(["import", str(tmp_path / "hf"), "--out", str(tmp_path / "other")]) == 0
    stray = random_adapter(tmp_path / "other", tmp_path / "stray", "stray", seed=3)
    (b,) = _servers(base, [])
    try:
        with pytest.raises(AdapterBaseMismatch, match=r"trained over 'other'.*served: base"):
            _servers(base, [stray])[1:]
    finally:
        b.close()


def test_logprobs_and_echo_agree_with_a_plain_forward_pass(base, adapters):
    """Through the decoder (base and an adapter, in one batch): the prompt's tokens'
    log-probabilities (echo) and the generated ones' equal log_softmax of one plain
    forward pass over prompt + completion."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    servers = _servers(base, adapters[:1])
    try:
        req = {"max_tokens": 6, "temperature": 0.0, "top_p": 1.0, "logprobs": 3, "echo": True}

        async def run() -> list:
            gens = [s.open(req, "What is 3 plus 4?", False) for s in servers]
            await asyncio.gather(*(s.complete(g) for s, g in zip(servers, gens, strict=True)))
            return gens

        gens = asyncio.run(run())
        plain = AutoModelForCausalLM.from_pretrained(base).eval()
        with torch.no_grad():
            for gen, adapter in zip(gens, (None, adapters[0]), strict=True):
                model = plain if adapter is None else PeftModel.from_pretrained(plain, adapter)
                ids = torch.tensor([gen.prompt_ids + gen.tokens])
                logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
                want = logp[:-1].gather(1, ids[0, 1:, None])[:, 0]
                got = [lp for lp, _ in gen.prompt_logprobs[1:]] + [lp for lp, _ in gen.logprobs]
                assert gen.prompt_logprobs[0] == (None, {})
                torch.testing.assert_close(torch.tensor(got), want, atol=1e-4, rtol=1e-4)
                # the top alternatives are the likeliest, and greedy picked the first of them
                top = gen.logprobs[0][1]
                assert len(top) == 3 and max(top.values()) == gen.logprobs[0][0]
                if adapter is not None:
                    model.unload()
    finally:
        for s in reversed(servers):  # adapters before their base
            s.close()
