"""An external judge of spoken digits: pocketsphinx's English acoustic model and dictionary
(shipped in its wheel), its search restricted to the ten digit words by a JSGF grammar."""

from __future__ import annotations

import os

import numpy as np

from genai.families.audio.digits import WORDS

RATE = 16000  # the acoustic model's rate


def resample(clips: np.ndarray, rate: int, to: int = RATE) -> np.ndarray:
    """int16 (N, samples) -> int16 at ``to`` Hz (polyphase, scipy)."""
    if rate == to:
        return clips
    from math import gcd

    from scipy.signal import resample_poly

    g = gcd(rate, to)
    out = resample_poly(clips.astype(np.float32), to // g, rate // g, axis=-1)
    return np.clip(np.round(out), -32768, 32767).astype(np.int16)


class Judge:
    def __init__(self) -> None:
        try:
            from pocketsphinx import Config, Decoder, get_model_path
        except ImportError:
            raise RuntimeError(
                "the pocketsphinx judge needs the pocketsphinx package (pip install "
                "'genai[audio]'), or set data.judge: false"
            ) from None
        model = get_model_path()
        config = Config(
            hmm=os.path.join(model, "en-us", "en-us"),
            dict=os.path.join(model, "en-us", "cmudict-en-us.dict"),
            loglevel="FATAL",
        )
        self.decoder = Decoder(config)
        grammar = "#JSGF V1.0; grammar digits; public <digit> = " + " | ".join(WORDS) + ";"
        self.decoder.add_jsgf_string("digits", grammar)
        self.decoder.activate_search("digits")

    def transcribe(self, clip: np.ndarray) -> str:
        """One int16 clip at 16 kHz -> the digit word heard ('' for none)."""
        d = self.decoder
        d.start_utt()
        d.process_raw(np.ascontiguousarray(clip, dtype="<i2").tobytes(), full_utt=True)
        d.end_utt()
        hyp = d.hyp()
        return hyp.hypstr.strip() if hyp is not None else ""

    def accuracy(self, clips: np.ndarray, labels: np.ndarray, rate: int) -> float:
        """Word accuracy: the share of clips heard as the digit they should say."""
        heard = [self.transcribe(c) for c in resample(clips, rate)]
        return float(np.mean([h == WORDS[y] for h, y in zip(heard, labels, strict=True)]))
