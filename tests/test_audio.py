"""The audio and music families without Ray: the spoken-digit builder (espeak-ng + sox),
the SpecGAN codec and the WaveGAN shapes, the speech route's input rules, ABC round trips through music21."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from genai.config import parse_job
from genai.families.audio import digits
from genai.families.audio.config import AudioGANConfig
from genai.families.audio.features import log_mel
from genai.families.audio.music.encoding import NotEncodable, parse_abc, score_to_abc
from genai.families.audio.music.quality import judge, steady_meter
from genai.families.audio.music.serve import first_piece, prompt_of
from genai.families.audio.nets import ClipCodec, build
from genai.families.audio.replica import digits_of, voice_seed
from genai.families.audio.specgan import MelCodec
from genai.families.audio.task import inception_score
from genai.families.audio.wavegan import Discriminator, Generator
from genai.serve.errors import APIError

from .support import audio_tools_missing

VOICES = ["en+m3", "en-us+f2", "en-gb-scotland+m1", "en+f4"]
MISSING = audio_tools_missing()
needs_espeak = pytest.mark.skipif(MISSING is not None, reason=MISSING or "")


@needs_espeak
def test_spoken_digits_hold_out_whole_voices_and_are_cached(tmp_path, monkeypatch):
    corpus, path = digits.build(tmp_path, VOICES, [150], [40, 60], 8000, 16384, log=lambda _: None)
    assert corpus.clips.shape == (len(VOICES) * 2 * 10, 16384) and corpus.clips.dtype == np.int16
    assert sorted(np.bincount(corpus.labels).tolist()) == [8] * 10
    # every clip holds speech, peak-normalized, centred: silence at both ends
    peaks = np.abs(corpus.clips).max(1)
    assert (np.abs(peaks - digits.PEAK * 32767) <= 1).all()
    assert (corpus.clips[:, :50] == 0).all() and (corpus.clips[:, -50:] == 0).all()  # no noise
    # whole voices apart: no held-out voice speaks a training clip
    held = digits.held_out_voices(VOICES, 0.25, seed=0)
    assert len(held) == 1
    train, val = corpus.split(held)
    assert not set(corpus.voices[train]) & set(corpus.voices[val])
    assert val.sum() == 20 and train.sum() == 60
    with pytest.raises(ValueError, match="data.held_out_voices"):
        corpus.split(["en+nobody"])
    # the second build reads the cache: it runs no program (none is on PATH any more)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    again, again_path = digits.build(tmp_path, VOICES, [150], [40, 60], 8000, 16384)
    assert again_path == path and (again.clips == corpus.clips).all()


def test_a_missing_espeak_ng_is_named_with_its_package(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(digits.MissingProgram, match=r"apt-get install -y espeak-ng sox"):
        digits.build(tmp_path / "cache", VOICES, [150], [50], 8000, 4096)
    assert not list(tmp_path.glob("cache/*"))  # nothing half-written


def test_a_missing_espeak_ng_fails_genai_train_in_one_line(tmp_path, monkeypatch, capsys):
    from genai import cli

    spec = tmp_path / "a.yaml"
    spec.write_text(
        "name: a\nmodel: {family: audio}\n"
        f"data: {{cache_dir: {tmp_path / 'cache'}}}\n"
        "train: {max_steps: 2, warmup_steps: 1}\n"
    )
    monkeypatch.setenv("PATH", str(tmp_path))
    assert cli.main(["train", str(spec)]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "espeak-ng" in err[0] and "apt-get install" in err[0], err


def test_spec_errors_name_the_field():
    base = {"name": "a", "model": {"family": "audio"}}
    with pytest.raises(ValueError, match="clip_samples"):
        parse_job({**base, "model": {"family": "audio", "clip_samples": 5000}})
    with pytest.raises(ValueError, match="data.speeds"):
        parse_job({**base, "data": {"speeds": [20]}})
    with pytest.raises(ValueError, match="model.num_classes"):
        parse_job({**base, "model": {"family": "audio", "num_classes": 12}})
    spec = parse_job(base)
    assert spec.data.kind == "spoken_digits" and spec.audio.loss == "non_saturating"


@pytest.mark.parametrize("clip", [1024, 4096, 16384])
def test_wavegan_shapes(clip):
    cfg = AudioGANConfig(arch="wavegan", clip_samples=clip, width=2, sample_rate=16000)
    g, d = Generator(cfg), Discriminator(cfg)
    z, y = g.latents(3, torch.Generator().manual_seed(0))
    x = g(z, y)
    assert x.shape == (3, 1, clip) and x.abs().max() <= 1
    assert d(x, y).shape == (3,)
    mel = log_mel(x[:, 0], cfg.sample_rate)
    assert mel.shape[:3] == (3, 1, 40) and mel.min() >= 0 and mel.max() <= 1


def test_specgan_nets_and_codec_round_trip_a_clip():
    cfg = AudioGANConfig(clip_samples=4096, sample_rate=4000, mels=32, width=4)
    g, d = build(cfg)
    z, y = g.latents(3, torch.Generator().manual_seed(0))
    x = g(z, y)
    assert x.shape == (3, 1, 32, 32) and x.abs().max() <= 1 and d(x, y).shape == (3,)
    # a chirp through the codec: the clip Griffin-Lim rebuilds has the same loudest mel
    # band in every frame, and mels that correlate with the chirp's (noise's do not)
    t = torch.arange(4096) / 4000
    chirp = (0.5 * torch.sin(2 * torch.pi * (200 + 300 * t) * t))[None]
    codec = ClipCodec(cfg)
    image = codec.encode(chirp)
    assert image.shape == (1, 1, 32, 32) and image.min() >= -1 and image.max() <= 1
    clip = codec.decode(image)
    assert clip.shape == (1, 4096) and clip.abs().max() <= 1
    again = codec.encode(clip)
    assert torch.equal(again.argmax(2), image.argmax(2))
    assert torch.corrcoef(torch.stack([again.flatten(), image.flatten()]))[0, 1] > 0.85
    noise = codec.encode(0.3 * torch.randn(1, 4096, generator=torch.Generator().manual_seed(0)))
    assert torch.corrcoef(torch.stack([noise.flatten(), image.flatten()]))[0, 1] < 0.3
    assert torch.equal(codec.decode(image), clip)  # zero-phase start: deterministic
    # a silent clip is the image's floor (-80 dB), not a NaN
    assert torch.equal(MelCodec(cfg).encode(torch.zeros(1, 4096)), -torch.ones(1, 1, 32, 32))
    with pytest.raises(ValueError, match="lower mels"):
        AudioGANConfig(clip_samples=256, mels=64)
    assert ClipCodec(AudioGANConfig(arch="wavegan")).encode(chirp).shape == (1, 1, 4096)


def test_inception_score_runs_from_one_to_the_number_of_classes():
    assert inception_score(torch.full((20, 10), 0.1)) == pytest.approx(1.0)
    assert inception_score(torch.eye(10).repeat(2, 1)) == pytest.approx(10.0, rel=1e-6)
    assert inception_score(torch.eye(10)[[3] * 20]) == pytest.approx(1.0)


def test_speech_input_rules():
    assert digits_of("7", 16) == [7]
    assert digits_of(" Three, 1  four ", 16) == [3, 1, 4]
    for bad, message in [("", "name digits"), ("seventy", "not a digit"), ("1 " * 17, "at most")]:
        with pytest.raises(APIError, match=message) as e:
            digits_of(bad, 16)
        assert e.value.status == 422 and e.value.param == "input"
    assert voice_seed("alloy") == voice_seed("alloy") != voice_seed("echo")


def test_music_prompts_and_pieces():
    assert prompt_of("") == "X:1\n"
    assert prompt_of("G2 A2 B2 c2 |").startswith("X:1\nM:4/4\nL:1/8\nK:C\nV:1\nG2 A2")
    assert prompt_of("M:3/4\nK:G\nV:1\nG2") == "X:1\nM:3/4\nK:G\nV:1\nG2\n"
    with pytest.raises(APIError, match="ABC"):
        prompt_of("ça")
    assert first_piece("X:1\nK:C\nC |]\nX:2\nK:G\nG") == "X:1\nK:C\nC |]\n"


def test_music_text_round_trips_to_a_parseable_score():
    from music21 import corpus

    score = corpus.parse("bwv13.6")
    text = score_to_abc(score)
    back = parse_abc(text)
    assert len(back.parts) == len(score.parts) == 4
    for a, b in zip(score.parts, back.parts, strict=True):
        # notes are cut at beats and tied on: the same notes once the ties are joined
        original = [
            (n.pitch.nameWithOctave, float(n.quarterLength)) for n in a.stripTies().flatten().notes
        ]
        read = [
            (n.pitch.nameWithOctave, float(n.quarterLength)) for n in b.stripTies().flatten().notes
        ]
        assert read == original
    # every bar is one group per beat: a 4/4 bar is four groups, the bars the edition cut
    # at a fermata written whole again (only the pickup and the last bar are short)
    bars = text.split("V:1\n")[1].split("\n")[0].split(" | ")
    assert bars[1] == "B2 c2 de f2" and bars[2] == "e2- e2 d2 de" and bars[4] == "B2- B2 A2 F2"
    assert [len(bar.split()) for bar in bars[1:-1]] == [4] * (len(bars) - 2)
    assert steady_meter(back) and not steady_meter(score)
    assert str(back.analyze("key")) == str(score.analyze("key"))
    shares = judge([text, text, "not music at all ###"])
    assert shares["parse"] == pytest.approx(2 / 3) and shares["pieces"] == 3
    assert shares["one_key"] == pytest.approx(2 / 3)  # unparsed text counts as neither


def test_a_steady_meter_is_nearly_every_inner_bar_whole():
    head = "X:1\nM:4/4\nL:1/8\nK:C\nV:1\n"
    assert steady_meter(parse_abc(head + "C2 | C8 | D8 | E8 | F8 | G4 A4 | c6 |]"))
    assert not steady_meter(parse_abc(head + "C2 | C8 | D4 | E8 | F6 | G4 A4 | c6 |]"))


def test_chords_within_a_part_are_refused_not_mangled():
    from music21 import chord, key, meter, stream

    part = stream.Part([meter.TimeSignature("4/4"), key.KeySignature(0)])
    part.append(chord.Chord(["C4", "E4"], quarterLength=4))
    with pytest.raises(NotEncodable, match="chord"):
        score_to_abc(stream.Score([part.makeMeasures()]))


def test_midi_and_wav_rendering():
    from music21 import corpus

    from genai.families.audio.music.render import can_render_wav, midi_bytes, wav_bytes

    midi = midi_bytes(parse_abc(score_to_abc(corpus.parse("bwv13.6"))))
    import pretty_midi

    pm = pretty_midi.PrettyMIDI(io.BytesIO(midi))
    assert len(pm.instruments) == 4 and pm.get_end_time() > 10
    if MISSING:
        pytest.skip(MISSING)
    assert can_render_wav()
    import soundfile

    audio, rate = soundfile.read(io.BytesIO(wav_bytes(midi)))
    assert rate == 16000 and len(audio) / rate > 10 and np.abs(audio).max() > 0.01


@pytest.mark.full
@needs_espeak
def test_pocketsphinx_hears_the_held_out_real_clips(tmp_path):
    """The external judge on the default job's corpus: its accuracy on real held-out voices
    is the figure generated clips are held against (README: 0.90 with the noise floor)."""
    from genai.families.audio import SpokenDigitsSpec
    from genai.families.audio.judge import Judge

    d = SpokenDigitsSpec(cache_dir=str(tmp_path))
    corpus, _ = digits.build(
        d.cache_dir, d.voices, d.speeds, d.pitches, 16000, 16384, d.noise_floor_db
    )
    _, val = corpus.split(digits.held_out_voices(d.voices, d.held_out_fraction, d.seed))
    accuracy = Judge().accuracy(corpus.clips[val], corpus.labels[val], 16000)
    assert 0.8 <= accuracy <= 1.0, accuracy  # chance is 0.1
