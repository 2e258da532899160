"""How musical generated ABC is, by music21's judgement, beside held-out real pieces:
the share that parses into a score, the share in one key (music21's key analysis is
confident), and the share with a steady meter (nearly every inner bar as long as the
time signature says)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from genai.families.audio.music.encoding import parse_abc

KEY_CONFIDENCE = 0.8  # music21's correlation with the best key profile (0..1)
STEADY = 0.8  # the share of inner bars that must be whole


def steady_meter(score: Any) -> bool:
    """At least STEADY of the inner bars (all but each part's first, a pickup, and last)
    are exactly as long as the time signature says. Not all: a chorale splits a bar at a
    fermata now and then."""
    from music21 import meter, stream

    ts = next(iter(score.flatten().getElementsByClass(meter.TimeSignature)), None)
    if ts is None:
        return False
    bar = float(ts.barDuration.quarterLength)
    full = []
    for part in score.parts if isinstance(score, stream.Score) else [score]:
        measures = list(part.getElementsByClass(stream.Measure))[1:-1]
        full += [abs(float(m.duration.quarterLength) - bar) < 1e-6 for m in measures]
    return len(full) >= 2 and sum(full) / len(full) >= STEADY


def one_key(score: Any) -> bool:
    try:
        return float(score.analyze("key").correlationCoefficient) >= KEY_CONFIDENCE
    except Exception:  # analysis of a degenerate score (one pitch class)
        return False


def verdict(text: str) -> tuple[bool, bool, bool]:
    """(parses, in one key, steady meter) for one piece."""
    try:
        score = parse_abc(text)
    except ValueError:
        return False, False, False
    return True, one_key(score), steady_meter(score)


def judge(texts: Iterable[str]) -> dict[str, float]:
    """The three shares over ``texts`` (key and meter over all pieces, unparsed ones
    counting as neither), and the number judged. Each piece is judged in a worker process
    with a deadline (:mod:`.bounded`): one past it counts as unparsed."""
    from genai.families.audio.music import bounded

    n = parsed = keyed = steady = 0
    for text in texts:
        n += 1
        try:
            p, k, m = bounded.run(verdict, text)
        except ValueError:
            continue
        parsed, keyed, steady = parsed + p, keyed + k, steady + m
    if n == 0:
        raise ValueError("no pieces to judge")
    return {"pieces": n, "parse": parsed / n, "one_key": keyed / n, "steady_meter": steady / n}
