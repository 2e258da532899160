"""Spoken digits made offline: espeak-ng says "zero" ... "nine" in many voices, speeds and
pitches; sox resamples to the model's rate and trims the silence. A local SC09 (the dataset
WaveGAN uses), built once and cached by its parameters.

A *voice* is a base voice with a variant (``en-us+f2``): whole voices are held out, so the
held-out clips test speaker independence."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from genai.data.arrays import save_whole

WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
PACKAGES = {"espeak-ng": "espeak-ng", "sox": "sox"}  # the programs and their Debian packages
PEAK = 0.5  # every clip is scaled to this peak: voices differ ~4x in loudness


class MissingProgram(OSError):
    """A program the corpus needs is not installed (the CLI prints it in one line)."""


def require_programs() -> None:
    """Raise naming the Debian packages when espeak-ng or sox is not on PATH."""
    missing = [p for p in PACKAGES if shutil.which(p) is None]
    if missing:
        pkgs = " ".join(PACKAGES[p] for p in missing)
        raise MissingProgram(
            f"spoken digits need {', '.join(missing)} on PATH: install the Debian "
            f"package{'s' if len(missing) > 1 else ''} ({'sudo ' if os.geteuid() else ''}"
            f"apt-get install -y {pkgs})"
        )


@dataclass(frozen=True)
class DigitsCorpus:
    """int16 clips (N, clip_samples) at ``sample_rate``; labels 0-9; each clip's voice."""

    clips: np.ndarray
    labels: np.ndarray
    voices: np.ndarray  # index into voice_names
    voice_names: tuple[str, ...]
    sample_rate: int

    def split(self, held_out: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Boolean masks (train, held-out): whole voices apart."""
        unknown = sorted(set(held_out) - set(self.voice_names))
        if unknown:
            raise ValueError(f"data.held_out_voices: {unknown} are not among data.voices")
        out = np.isin(self.voices, [self.voice_names.index(v) for v in held_out])
        return ~out, out


def held_out_voices(voices: Sequence[str], fraction: float, seed: int) -> list[str]:
    """A seeded choice of whole voices, at least one, never all."""
    n = min(len(voices) - 1, max(1, round(len(voices) * fraction)))
    rng = np.random.default_rng(seed)
    return sorted(voices[i] for i in rng.choice(len(voices), n, replace=False))


def speak(word: str, voice: str, speed: int, pitch: int, sample_rate: int) -> np.ndarray:
    """One word as int16 samples at ``sample_rate``, leading and trailing silence trimmed."""
    say = subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout", word],
        capture_output=True,
        check=True,
    )
    trim = ["silence", "1", "0.01", "0.5%", "reverse", "silence", "1", "0.01", "0.5%", "reverse"]
    out = subprocess.run(
        [
            "sox",
            "-t",
            "wav",
            "-",
            "-r",
            str(sample_rate),
            "-c",
            "1",
            "-b",
            "16",
            "-e",
            "signed",
            "-t",
            "raw",
            "-",
            *trim,
        ],
        input=say.stdout,
        capture_output=True,
        check=True,
    )
    return np.frombuffer(out.stdout, dtype="<i2")


def fit(samples: np.ndarray, length: int, peak: float = PEAK) -> np.ndarray:
    """Centred in ``length`` samples (cut at the ends if longer), scaled to ``peak``."""
    x = samples.astype(np.float32)
    if len(x) > length:
        start = (len(x) - length) // 2
        x = x[start : start + length]
    top = float(np.abs(x).max()) if len(x) else 0.0
    if top > 0:
        x *= peak * 32767 / top
    out = np.zeros(length, dtype=np.float32)
    start = (length - len(x)) // 2
    out[start : start + len(x)] = x
    return np.round(out).astype(np.int16)


def build(
    cache_dir: str | Path,
    voices: Sequence[str],
    speeds: Sequence[int],
    pitches: Sequence[int],
    sample_rate: int,
    clip_samples: int,
    noise_floor_db: float | None = None,
    log: Callable[[str], None] = print,
) -> tuple[DigitsCorpus, Path]:
    """Every word in every voice, speed and pitch; cached under ``cache_dir`` by its parameters
    (a second call with the same ones reads the cache and runs no program).
    ``noise_floor_db``: white noise at this RMS level (dB below full scale) under every
    clip, a recording's noise floor (seeded: the same corpus each time); None: digital
    silence around the words."""
    params = {
        "voices": list(voices),
        "speeds": list(speeds),
        "pitches": list(pitches),
        "sample_rate": sample_rate,
        "clip_samples": clip_samples,
        "peak": PEAK,
        "noise_floor_db": noise_floor_db,
    }
    key = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]
    path = Path(cache_dir) / f"spoken-digits-{key}.npz"
    if path.is_file():
        with np.load(path) as z:  # plain arrays: no pickles
            return DigitsCorpus(
                z["clips"], z["labels"], z["voices"], tuple(voices), sample_rate
            ), path
    require_programs()
    jobs = [
        (w, v, s, p)
        for v in range(len(voices))
        for s in speeds
        for p in pitches
        for w in range(len(WORDS))
    ]
    log(f"spoken digits: synthesizing {len(jobs)} clips with espeak-ng ({len(voices)} voices)")

    def one(job: tuple[int, int, int, int]) -> np.ndarray:
        w, v, s, p = job
        try:
            return fit(speak(WORDS[w], voices[v], s, p, sample_rate), clip_samples)
        except subprocess.CalledProcessError as exc:
            err = exc.stderr.decode(errors="replace").strip()[:200]
            raise ValueError(
                f"data.voices: espeak-ng/sox failed for voice {voices[v]!r}: {err}"
            ) from None

    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        clips = np.stack(list(pool.map(one, jobs)))
    if noise_floor_db is not None:
        rng = np.random.default_rng(int(key, 16))
        noise = rng.normal(0.0, 32767 * 10 ** (noise_floor_db / 20), clips.shape)
        clips = np.clip(np.round(clips + noise), -32768, 32767).astype(np.int16)
    labels = np.array([j[0] for j in jobs], dtype=np.int64)
    voice_ids = np.array([j[1] for j in jobs], dtype=np.int64)
    save_whole(path, clips=clips, labels=labels, voices=voice_ids)
    (path.with_suffix(".json")).write_text(json.dumps(params, indent=1))
    log(f"spoken digits: cached {len(clips)} clips in {path}")
    return DigitsCorpus(clips, labels, voice_ids, tuple(voices), sample_rate), path


def to_float(clips: np.ndarray) -> np.ndarray:
    """int16 -> float32 in [-1, 1]."""
    return clips.astype(np.float32) / 32768.0
