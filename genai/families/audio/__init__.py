"""The audio family: a conditional SpecGAN (or WaveGAN) on spoken digits made offline with
espeak-ng, on the GAN family's two DeepSpeed engines, served as WAV through OpenAI's
speech route.

It is registered as a plugin is, through the ``genai.families`` entry point in
pyproject.toml: nothing outside this package names it. The same package registers the
``music`` family's speech rendering: symbolic music is an LM job (:mod:`.music`), and the
speech route answers a music model with MIDI or WAV.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from genai.families.audio.config import AudioGANConfig
from genai.families.audio.schemas import AudioCard, AudioLog, SpeechRequest, SpeechResponse
from genai.families.base import Family
from genai.families.gan import GANSpec
from genai.families.images import check_image_job
from genai.serve.api import Route
from genai.specbase import PathField, Section

# espeak-ng's English base voices x its voice variants: 48 voices, male and female
BASE_VOICES = ("en", "en-us", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-us-nyc")
VARIANTS = ("m1", "m3", "m5", "m7", "f1", "f2", "f4", "klatt")
DEFAULT_VOICES = [f"{b}+{v}" for b in BASE_VOICES for v in VARIANTS]


class AudioModelSpec(AudioGANConfig):
    """A conditional SpecGAN or WaveGAN (genai/families/audio/config.py declares the
    fields)."""

    family: Literal["audio"]


class SpokenDigitsSpec(Section):
    """Spoken digits synthesized by espeak-ng (Debian packages espeak-ng and sox), every
    word in every voice, speed and pitch; built once, cached by these parameters."""

    kind: Literal["spoken_digits"] = "spoken_digits"
    voices: list[str] = Field(
        default_factory=lambda: list(DEFAULT_VOICES),
        min_length=2,
        description="espeak-ng voices (base+variant); whole voices are held out",
    )
    speeds: list[int] = Field(
        default_factory=lambda: [130, 175], min_length=1, description="words per minute (-s)"
    )
    pitches: list[int] = Field(
        default_factory=lambda: [35, 65], min_length=1, description="0-99 (-p)"
    )
    noise_floor_db: float | None = Field(
        -50.0,
        le=-20.0,
        description="white noise under every clip (dB below full scale), a recording's "
        "noise floor; null: digital silence around the words",
    )
    held_out_fraction: float = Field(
        0.2, gt=0.0, lt=1.0, description="share of voices held out (at least one)"
    )
    held_out_voices: list[str] | None = Field(
        None, description="the held-out voices by name (instead of a seeded draw)"
    )
    cache_dir: str = PathField(".genai_cache", description="the clips and the classifier")
    judge: bool = Field(
        True, description="transcribe generated clips with pocketsphinx at each evaluation"
    )
    seed: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _ranges(self) -> SpokenDigitsSpec:
        if any(not 80 <= s <= 450 for s in self.speeds):
            raise ValueError(f"data.speeds must be 80-450 words per minute, got {self.speeds}")
        if any(not 0 <= p <= 99 for p in self.pitches):
            raise ValueError(f"data.pitches must be 0-99, got {self.pitches}")
        if len(set(self.voices)) != len(self.voices):
            raise ValueError("data.voices lists a voice twice")
        return self


class AudioSpec(GANSpec):
    """Adversarial training as DCGAN's, which SpecGAN's nets are: the non-saturating loss,
    Adam(2e-4, 0.5, 0.999). (WaveGAN's paper: hinge or WGAN-GP, Adam(1e-4, 0.5, 0.9).)"""

    loss: Literal["non_saturating", "hinge"] = "non_saturating"
    g_lr: float = Field(2e-4, gt=0.0, le=1.0)
    d_lr: float = Field(2e-4, gt=0.0, le=1.0)
    beta2: float = Field(0.999, ge=0.0, lt=1.0)
    eval_samples: int = Field(500, ge=10, description="generated clips per quality evaluation")
    judge_samples: int = Field(
        200, ge=10, description="generated clips pocketsphinx transcribes per evaluation"
    )


class AudioServeSpec(Section):
    """``@serve.batch`` for speech requests (clips of every request in one forward)."""

    max_batch_size: int = Field(16, ge=1, le=1024)
    batch_wait_timeout_s: float = Field(0.01, ge=0.0, le=10.0)
    max_words: int = Field(16, ge=1, le=256, description="digits one request may speak")
    music_max_tokens: int = Field(
        768, ge=16, le=100_000, description="tokens a music model writes per request"
    )


def check_audio_job(spec) -> None:
    check_image_job(spec)  # the GAN's steps: one micro-batch per step
    if spec.model.conditional and spec.model.num_classes != 10:
        raise ValueError(
            f"model.num_classes must be 10 for spoken digits, got {spec.model.num_classes}"
        )


SPEECH = Route(
    path="/v1/audio/speech",
    request=SpeechRequest,
    response=SpeechResponse,
    id_prefix="speech",
    gateway="genai.families.audio.routes:speech",
    replica="genai.families.audio.replica:speech",
    summary="a WAV (spoken digits, or rendered music) or a MIDI file (music models)",
    answered_by=("lm",),  # an LM trained on ABC text (jobs/music-bach.yaml)
)

FAMILY = Family(
    name="audio",
    model_spec=AudioModelSpec,
    data_spec=SpokenDigitsSpec,
    section=AudioSpec,
    objective=("fd", "min"),
    metrics=(
        "fd",
        "cond_accuracy",
        "inception_score",
        "asr_accuracy",
        "classes_covered",
        "d_loss",
        "g_loss",
        "clips_per_s",
    ),
    lr_keys=("audio.g_lr", "audio.d_lr"),
    prepare="genai.families.audio.data:prepare",
    task="genai.families.audio.task:AudioGANTask",
    server="genai.families.audio.serving:server",
    check=check_audio_job,
    routes=(SPEECH,),
    card_fields=AudioCard,
    log_fields=AudioLog,
    serve_section=("audio", AudioServeSpec),
)
