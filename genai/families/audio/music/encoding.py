"""Scores as ABC text, and back: what the music LM reads and writes.

ABC (abcnotation.com) rather than an event encoding of our own: it is compact (a note is
two or three characters), a score reads as text a musician can check, and music21 parses
it, so whether generated text is music is judged by a parser nobody here wrote.

The writer keeps what a chorale needs: the key and time signatures, one ``V:`` block per
part, notes and rests with their lengths in eighths (``L:1/8``), ties and bar lines.
Every beat is one group of characters and groups are separated by a space: notes in the
same beat are written together (as ABC beams them), and a note that crosses into the next
beat is cut there and tied on (``e2- e2``, a half note). A 4/4 bar is then always four
groups (``B2 c2 de f2``), so a bar's length can be read off by counting groups instead of
adding up lengths: what a small model can learn to do.
Accidentals are explicit wherever the key signature, or an earlier accidental on the same
letter in the bar, would otherwise decide them, so the text reads the same under ABC's
per-octave and per-letter conventions. Pieces with lengths no eighth-based fraction of
denominator <= 16 writes exactly (tuplets, grace notes) are refused.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

VERSION = 4  # bump when the text changes: a corpus written by another version is rewritten
ACCIDENTALS = {-2: "__", -1: "_", 0: "=", 1: "^", 2: "^^"}


class NotEncodable(ValueError):
    pass


def _length(quarter_length: Any) -> str:
    units = Fraction(quarter_length).limit_denominator(64) * 2  # in eighths
    if units <= 0 or units.denominator not in (1, 2, 4, 8, 16):
        raise NotEncodable(f"a length of {quarter_length} quarters")
    if units == 1:
        return ""
    if units.denominator == 1:
        return str(units.numerator)
    if units.numerator == 1:
        return "/" if units.denominator == 2 else f"/{units.denominator}"
    return f"{units.numerator}/{units.denominator}"


def _pitch_name(step: str, octave: int) -> str:
    """C4 -> C, C5 -> c, C6 -> c', C3 -> C, (ABC's octave marks)."""
    if octave >= 5:
        return step.lower() + "'" * (octave - 5)
    return step.upper() + "," * (4 - octave)


def _key_alters(key_signature: Any) -> dict[str, int]:
    out = {}
    for p in key_signature.alteredPitches:
        out[p.step] = int(p.alter)
    return out


def score_to_abc(score: Any, title: str = "", index: int = 1) -> str:
    """A music21 Score (or Part) -> ABC text with one V: block per part."""
    from music21 import chord, key, meter, note, stream

    parts = list(score.parts) if isinstance(score, stream.Score) else [score]
    if not parts:
        raise NotEncodable("no parts")
    flat = parts[0].flatten()
    ts = next(iter(flat.getElementsByClass(meter.TimeSignature)), None)
    ks = next(iter(flat.getElementsByClass(key.KeySignature)), None)
    if ts is None or ks is None:
        raise NotEncodable("no time or key signature")
    sharps = ks.sharps
    key_name = key.KeySignature(sharps).asKey("major").tonic.name.replace("-", "b")
    lines = [f"X:{index}"] + ([f"T:{title}"] if title else []) + [f"M:{ts.ratioString}", "L:1/8"]
    lines.append(f"K:{key_name}")
    alters = _key_alters(key.KeySignature(sharps))
    beat = Fraction(ts.beatDuration.quarterLength).limit_denominator(64)
    whole = Fraction(ts.barDuration.quarterLength).limit_denominator(64)
    plan = _bar_plan(list(parts[0].getElementsByClass(stream.Measure)), whole)
    for v, part in enumerate(parts, start=1):
        bars = []
        measures = list(part.getElementsByClass(stream.Measure))
        if len(measures) != sum(len(g) for g in plan):
            raise NotEncodable("parts with different numbers of bars")
        for group in plan:
            seen: dict[str, int] = {}  # letter -> the alteration last written in this bar
            tokens: list[str] = []
            beats: list[int] = []  # the beat each token starts in
            # a pickup starts after its rest; a bar's second half after its first
            start = Fraction(measures[group[0]].paddingLeft).limit_denominator(64)
            for i in group:
                measure = measures[i]
                inner = measure.flatten()
                if _changes(inner, ks, ts):
                    raise NotEncodable("a key or time signature change")
                for el in inner.notesAndRests:
                    if isinstance(el, chord.Chord):
                        raise NotEncodable("a chord within a part")
                    if el.duration.isGrace:
                        raise NotEncodable("a grace note")
                    at = start + Fraction(el.offset).limit_denominator(64)
                    pieces = _split_at_beats(
                        at, Fraction(el.quarterLength).limit_denominator(64), beat
                    )
                    if isinstance(el, note.Rest):
                        for s0, d in pieces:
                            tokens.append("z" + _length(d))
                            beats.append(int(s0 // beat))
                        continue
                    p = el.pitch
                    alter = int(p.alter) if p.accidental is not None else 0
                    if p.accidental is not None and p.alter != int(p.alter):
                        raise NotEncodable("a microtone")
                    implied = seen.get(p.step, alters.get(p.step, 0))
                    acc = ""
                    if alter != implied or p.step in seen:
                        acc = ACCIDENTALS[alter]
                        seen[p.step] = alter
                    tie = "-" if el.tie is not None and el.tie.type in ("start", "continue") else ""
                    name = _pitch_name(p.step, p.octave)
                    for k, (s0, d) in enumerate(pieces):
                        last = k == len(pieces) - 1
                        # the accidental holds for the rest of the bar; pieces after the first
                        # are tied on
                        tokens.append(
                            (acc if k == 0 else "") + name + _length(d) + (tie if last else "-")
                        )
                        beats.append(int(s0 // beat))
                start += _length_of(measure)
            if tokens:
                bars.append(_beamed(tokens, beats))
        if not bars:
            raise NotEncodable(f"part {v} has no notes")
        lines.append(f"V:{v}")
        lines.append(" | ".join(bars) + " |]")
    return "\n".join(lines) + "\n"


def _length_of(measure: Any) -> Fraction:
    return Fraction(measure.duration.quarterLength).limit_denominator(64)


def _bar_plan(measures: list[Any], whole: Fraction) -> list[list[int]]:
    """Which measures make each written bar: one each, except that a short measure after
    the first and the short one after it that completes it are one bar. Chorale editions
    cut the bar at a phrase's fermata into two measures; written as one bar, every inner bar
    is whole, as the music is."""
    lengths = [_length_of(m) for m in measures]
    plan, i = [], 0
    while i < len(lengths):
        if 0 < i < len(lengths) - 1 and lengths[i] < whole and lengths[i] + lengths[i + 1] == whole:
            plan.append([i, i + 1])
            i += 2
        else:
            plan.append([i])
            i += 1
    return plan


def _split_at_beats(
    at: Fraction, length: Fraction, beat: Fraction
) -> list[tuple[Fraction, Fraction]]:
    """(start, length) pieces of a note from ``at`` for ``length`` quarters, cut where a
    beat begins: a half note on a beat becomes two tied quarters."""
    out, end = [], at + length
    while at < end:
        nxt = min(end, (at // beat + 1) * beat)
        out.append((at, nxt - at))
        at = nxt
    return out


def _beamed(tokens: list[str], beats: list[int]) -> str:
    """A bar's notes, those that start in the same beat written together (ABC's beaming)
    and a space between beats: the beat groups show a reader, or a model, how full the
    bar is."""
    groups: list[str] = []
    for i, (tok, b) in enumerate(zip(tokens, beats, strict=True)):
        if i and b == beats[i - 1]:
            groups[-1] += tok
        else:
            groups.append(tok)
    return " ".join(groups)


def _changes(inner: Any, ks: Any, ts: Any) -> bool:
    from music21 import key, meter

    for e in inner.getElementsByClass(key.KeySignature):
        if e.sharps != ks.sharps:
            return True
    for e in inner.getElementsByClass(meter.TimeSignature):
        if e.ratioString != ts.ratioString:
            return True
    return False


def parse_abc(text: str) -> Any:
    """ABC text -> a music21 Score; raises ValueError when music21 cannot read it or finds
    no notes."""
    from music21 import converter, stream

    try:
        parsed = converter.parse(text, format="abc")
    except Exception as exc:  # music21 raises many kinds on malformed text
        raise ValueError(f"not parseable ABC: {type(exc).__name__}: {str(exc)[:200]}") from None
    score: Any = parsed
    if isinstance(parsed, stream.Opus):
        score = parsed.scores[0] if parsed.scores else None
    if score is None or not score.flatten().notes:
        raise ValueError("not parseable ABC: no notes")
    return score
