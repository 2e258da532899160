"""A score as MIDI bytes (pretty_midi) and as a WAV (Debian's fluidsynth with the General MIDI
soundfont, where installed)."""

from __future__ import annotations

import io
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

SOUNDFONTS = (
    "/usr/share/sounds/sf2/FluidR3_GM.sf2",
    "/usr/share/sounds/sf2/default-GM.sf2",
)


def midi_bytes(score: Any, seconds_per_quarter: float = 0.5) -> bytes:
    """A score's notes as a MIDI file, one track per part (pretty_midi), at 120 quarters a
    minute. Not music21's MIDI writer: it raises on many sampled pieces music21 has read
    (a repeat sign with no bars, a time signature met twice), and notes are all we need."""
    import pretty_midi

    midi = pretty_midi.PrettyMIDI(initial_tempo=60 / seconds_per_quarter)
    parts = list(getattr(score, "parts", [])) or [score]
    for part in parts:
        track = pretty_midi.Instrument(program=0)
        for n in part.stripTies().flatten().notes:
            length = float(n.quarterLength)
            if length <= 0:  # grace notes
                continue
            start = float(n.offset) * seconds_per_quarter
            end = start + length * seconds_per_quarter
            for pitch in n.pitches:
                track.notes.append(pretty_midi.Note(80, int(pitch.midi), start, end))
        midi.instruments.append(track)
    buf = io.BytesIO()
    midi.write(buf)
    return buf.getvalue()


def soundfont() -> str | None:
    return next((s for s in SOUNDFONTS if Path(s).is_file()), None)


def can_render_wav() -> bool:
    return shutil.which("fluidsynth") is not None and soundfont() is not None


def wav_bytes(midi: bytes, sample_rate: int = 16000) -> bytes:
    """MIDI -> 16-bit WAV through fluidsynth (no audio device: file output only)."""
    sf = soundfont()
    if shutil.which("fluidsynth") is None or sf is None:
        raise RuntimeError(
            "rendering music to WAV needs fluidsynth and a General MIDI soundfont "
            "(apt-get install -y fluidsynth fluid-soundfont-gm); ask for response_format midi"
        )
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.mid", Path(tmp) / "out.wav"
        src.write_bytes(midi)
        subprocess.run(
            [
                "fluidsynth",
                "-ni",
                "-q",
                "-g",
                "0.8",
                "-r",
                str(sample_rate),
                "-F",
                str(dst),
                "-T",
                "wav",
                "-O",
                "s16",
                sf,
                str(src),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
        return dst.read_bytes()
