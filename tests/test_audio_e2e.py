"""The audio family end to end: a tiny conditional SpecGAN trained by Ray Train on two
DeepSpeed engines (with the pocketsphinx judge in its evaluations) resumes exactly; a tiny
music LM on ABC text; both behind OpenAI's speech route, fetched with the official client."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import time

import httpx
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from genai import checkpoint as ckpt
from genai.config import parse_job

from .conftest import TINY, merge
from .support import audio_tools_missing

MISSING = audio_tools_missing()
pytestmark = [pytest.mark.e2e, pytest.mark.skipif(MISSING is not None, reason=MISSING or "")]

AUDIO = {
    "name": "tiny-audio",
    "model": {
        "family": "audio",
        "sample_rate": 4000,
        "clip_samples": 4096,
        "mels": 32,
        "width": 4,
        "latent_dim": 16,
    },
    "data": {
        "voices": ["en+m3", "en-us+f2", "en-gb-scotland+m1", "en+f4"],
        "speeds": [150],
        "pitches": [50],
        "held_out_voices": ["en+f4"],
    },
    "audio": {"eval_samples": 20, "judge_samples": 10},
    "train": {
        "max_steps": 4,
        "micro_batch_size": 6,
        "warmup_steps": 1,
        "log_every": 1,
        "eval_every": 2,
    },
    "deepspeed": {"zero_stage": 2, "precision": "fp32"},
    "scaling": {"num_workers": 2},
    "checkpoint": {"every_steps": 2, "keep": 3},
}


@pytest.fixture(scope="module")
def audio_spec(tmp_path_factory, cache_dir):
    root = tmp_path_factory.mktemp("audio")
    raw = merge(AUDIO, {"data": {"cache_dir": str(cache_dir)}})
    return parse_job(merge(raw, {"checkpoint": {"dir": str(root / "ckpt")}}))


@pytest.fixture(scope="module")
def audio_run(ray_session, audio_spec):
    from genai.train.run import train

    return train(audio_spec)


def test_audio_checkpoint_holds_both_engines_quality_spectrograms_and_wavs(audio_run):
    import soundfile

    meta = ckpt.read_meta(audio_run)
    assert meta.family == "audio" and meta.step == 4 and meta.world_size == 2
    m = meta.metrics
    assert m["clips_per_s"] > 0 and np.isfinite([m["d_loss"], m["g_loss"], m["fd"]]).all()
    assert 1.0 <= m["inception_score"] <= 10.0 and 0.0 <= m["cond_accuracy"] <= 1.0
    # the references the figures sit beside: the classifier's held-out-voice accuracy, the
    # real-vs-real FD, and pocketsphinx on real held-out clips; and its verdict on generated ones
    assert 0.0 < m["real_fd_floor"] < m["fd"]
    assert 0.0 <= m["classifier_accuracy"] <= 1.0 and 0.0 <= m["asr_real_accuracy"] <= 1.0
    assert 0.0 <= m["asr_accuracy"] <= 1.0
    assert [h["step"] for h in meta.history] == [0, 2, 4]
    for name in ("model.safetensors", "discriminator.safetensors", "classifier.safetensors"):
        assert (audio_run / name).is_file()
    assert {p.name for p in (audio_run / "deepspeed").iterdir()} >= {"generator", "discriminator"}
    assert (audio_run / "spectrograms.png").stat().st_size > 1000
    wavs = sorted((audio_run / "samples").glob("*.wav"))
    assert [w.stem for w in wavs] == sorted(meta.export["class_names"])
    audio, rate = soundfile.read(wavs[0])
    assert rate == 4000 and audio.shape == (4096,)


def test_audio_resume_reproduces_the_uninterrupted_run(audio_run, audio_spec):
    """Lose the step-4 checkpoint, resume from step 2: both engines' weights at step 4 come
    out the same."""
    from genai.train.run import train

    reference = {
        n: load_file(audio_run / n) for n in ("model.safetensors", "discriminator.safetensors")
    }
    ref_meta = ckpt.read_meta(audio_run)
    root = audio_spec.checkpoint_dir
    lost = root / ".lost"
    os.rename(audio_run, lost)
    (root / "latest").unlink()
    try:
        assert ckpt.find_latest(root) == root / "step-000002"
        resumed = train(audio_spec, resume=True)
        meta = ckpt.read_meta(resumed)
        assert meta.step == 4 and meta.run_id == ref_meta.run_id
        assert [h["step"] for h in meta.history] == [0, 2, 4]
        assert meta.metrics["fd"] == pytest.approx(ref_meta.metrics["fd"], rel=1e-4)
        for name, tensors in reference.items():
            again = load_file(resumed / name)
            for key, t in tensors.items():
                torch.testing.assert_close(again[key], t, rtol=1e-5, atol=1e-6, msg=key)
    finally:  # the module's other tests use the run's checkpoint
        shutil.rmtree(root / "step-000004", ignore_errors=True)
        os.rename(lost, root / "step-000004")


@pytest.fixture(scope="module")
def music_run(ray_session, tmp_path_factory, cache_dir):
    """A tiny LM on a few chorales as ABC text: enough to write something music21 reads."""
    from genai.families.audio.music.corpus import export
    from genai.train.run import train

    root = tmp_path_factory.mktemp("music")
    corpus = export("bach", root / "abc", max_pieces=24, log=lambda _: None)
    raw = merge(
        TINY,
        {
            "name": "tiny-music",
            "model": {"max_position": 192},
            "data": {
                "source": str(corpus),
                "include": ["*.abc"],
                "seq_len": 192,
                "cache_dir": str(cache_dir),
                "tokenizer": {"vocab_size": 300},
            },
            "train": {"max_steps": 4, "eval_every": 4},
            "scaling": {"num_workers": 1},
            "checkpoint": {"dir": str(root / "ckpt"), "every_steps": 4},
        },
    )
    return train(parse_job(raw))


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("speech-log")


@pytest.fixture(scope="module")
def speech(serve_url, audio_run, music_run, log_dir):
    from ray import serve

    from genai.serve.app import build_app
    from genai.serve.spec import ServeSpec

    spec = ServeSpec(generation_log={"dir": str(log_dir), "flush_s": 0.2})
    serve.run(build_app(spec, [audio_run, music_run]), name="genai-audio", route_prefix="/")
    client = httpx.Client(base_url=serve_url, timeout=120)
    yield client
    client.close()
    serve.delete("genai-audio")


def test_the_official_client_gets_wavs_of_the_digits_asked_for(speech, serve_url, log_dir):
    import soundfile
    from openai import OpenAI

    cards = {m["id"]: m for m in speech.get("/v1/models").json()["data"]}
    card = cards["tiny-audio"]
    assert (card["family"], card["sample_rate"], card["conditional"]) == ("audio", 4000, True)
    client = OpenAI(base_url=f"{serve_url}/v1", api_key="unused", max_retries=0)
    one = client.audio.speech.create(
        model="tiny-audio", voice="alloy", input="7", response_format="wav"
    )
    audio, rate = soundfile.read(io.BytesIO(one.content))
    assert rate == 4000 and audio.shape == (4096,)
    # three digits, one voice: three clips joined; the same voice again speaks the same way
    three = client.audio.speech.create(model="tiny-audio", voice="alloy", input="3 one 4")
    audio3, _ = soundfile.read(io.BytesIO(three.content))
    assert audio3.shape == (3 * 4096,)
    again = client.audio.speech.create(model="tiny-audio", voice="alloy", input="7")
    other = client.audio.speech.create(model="tiny-audio", voice="echo", input="7")
    assert again.content == one.content != other.content
    # logged with the audio's digest
    from genai.serve import genlog

    digest = hashlib.sha256(three.content).hexdigest()
    deadline, rows = time.monotonic() + 30, []
    while time.monotonic() < deadline:
        rows = genlog.read(log_dir)[0].to_pylist()
        if any(r.get("audio_sha256") == digest for r in rows):
            break
        time.sleep(0.2)
    row = next(r for r in rows if r.get("audio_sha256") == digest)
    assert row["model"] == "tiny-audio" and row["audio_format"] == "wav"
    assert row["route"] == "/v1/audio/speech" and row["status"] == 200
    assert row["prompt"] == "3 one 4" and json.loads(row["params"])["voice"] == "alloy"


def test_a_music_model_answers_midi_and_wav(speech, serve_url):
    import pretty_midi
    from openai import OpenAI

    from genai.families.audio.music.render import can_render_wav

    client = OpenAI(base_url=f"{serve_url}/v1", api_key="unused", max_retries=0)
    # (an empty input lets the model write the header too: a 4-step model cannot yet)
    header = "X:1\nM:3/4\nL:1/8\nK:D\nV:1\nd2 e2 f2 |"
    midi = client.audio.speech.create(
        model="tiny-music", voice="alloy", input=header, response_format="midi"
    )
    assert midi.content[:4] == b"MThd"
    notes = pretty_midi.PrettyMIDI(io.BytesIO(midi.content)).instruments[0].notes
    assert [n.pitch for n in notes[:3]] == [74, 76, 78]  # d e ^f: D major's F sharp
    opening = client.audio.speech.create(
        model="tiny-music", voice="alloy", input="G2 A2 B2 c2 |", response_format="midi"
    )
    notes = pretty_midi.PrettyMIDI(io.BytesIO(opening.content)).instruments[0].notes
    assert [n.pitch for n in notes[:4]] == [67, 69, 71, 72]  # the bar asked for comes first
    if not MISSING:
        import soundfile

        assert can_render_wav()
        wav = client.audio.speech.create(model="tiny-music", voice="alloy", input=header)
        audio, rate = soundfile.read(io.BytesIO(wav.content))
        assert rate == 16000 and len(audio) > 0


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"model": "tiny-audio", "input": "seventy"}, 422, "input"),
        ({"model": "tiny-audio", "input": ""}, 422, "input"),
        ({"model": "tiny-audio", "input": " ".join(["1"] * 17)}, 422, "input"),
        ({"model": "tiny-audio", "input": 7}, 422, "input"),
        ({"model": "tiny-audio", "input": "7", "response_format": "mp3"}, 422, "response_format"),
        ({"model": "tiny-audio", "input": "7", "response_format": "midi"}, 422, "response_format"),
        ({"model": "nobody", "input": "7"}, 404, "model"),
        ({"input": "7"}, 422, "model"),  # two models answer the route: name one
        ({"model": "tiny-music", "input": "ça"}, 422, "input"),
    ],
)
def test_bad_speech_requests_get_4xx_naming_the_field(speech, body, status, param):
    r = speech.post("/v1/audio/speech", json=body)
    assert r.status_code == status, r.text
    assert r.json()["error"]["param"] == param, r.text
    # and the replica that refused it still answers
    assert speech.post("/v1/audio/speech", json={"model": "tiny-audio", "input": "1"}).is_success


def test_the_playground_plays_speech(speech, serve_url, browser):
    """The playground picks speech for an audio model and plays the WAV it gets back."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select, WebDriverWait

    wait = WebDriverWait(browser, 60)
    browser.get(serve_url.rstrip("/") + "/")
    wait.until(ec.text_to_be_present_in_element((By.ID, "status"), "2 model(s)"))
    Select(browser.find_element(By.ID, "model")).select_by_value("tiny-audio")
    assert Select(browser.find_element(By.ID, "mode")).first_selected_option.text == "speech"
    browser.find_element(By.ID, "prompt").send_keys("4 2")
    browser.find_element(By.ID, "send").click()
    wait.until(lambda d: d.find_element(By.ID, "gen-id").text.startswith("speech-"))
    # the browser decoded it: two 4096-sample clips at 4 kHz are 2.048 s
    duration = wait.until(
        lambda d: d.execute_script(
            "const a = document.querySelector('#images audio');"
            "return a && a.readyState >= 1 ? a.duration : null;"
        )
    )
    assert duration == pytest.approx(2.048, abs=0.01)
    assert browser.find_element(By.ID, "error").text == ""
