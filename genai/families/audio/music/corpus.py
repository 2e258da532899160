"""music21's bundled corpus as ABC files, one per piece: the music LM's training text.

Offline: the corpus ships inside the music21 wheel. Written once per output directory;
``manifest.json`` names what was written and what was skipped (and why)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from genai.families.audio.music.encoding import VERSION, NotEncodable, score_to_abc


def pieces(composer: str) -> list[Path]:
    from music21 import corpus

    found = sorted(corpus.getComposer(composer))
    if not found:
        raise ValueError(f"music21's corpus has no pieces by {composer!r} (try bach, palestrina)")
    return found


def _encode(path: Path) -> tuple[str, str | None, str | None]:
    """(stem, ABC text or None, why it was skipped or None)."""
    from music21 import corpus

    try:
        score = corpus.parse(str(path))
        return path.stem, score_to_abc(score), None
    except NotEncodable as exc:
        return path.stem, None, str(exc)
    except Exception as exc:  # a corpus file music21 itself cannot read
        return path.stem, None, f"{type(exc).__name__}: {str(exc)[:100]}"


def export(
    composer: str,
    out: str | Path,
    max_pieces: int | None = None,
    log: Callable[[str], None] = print,
) -> Path:
    out = Path(out)
    manifest = out / "manifest.json"
    if manifest.is_file():
        done = json.loads(manifest.read_text())
        same = (done.get("composer"), done.get("max_pieces"), done.get("encoding"))
        if same == (composer, max_pieces, VERSION):
            log(f"music corpus: {len(done['written'])} pieces already in {out}")
            return out
    paths = pieces(composer)[:max_pieces]
    log(f"music corpus: encoding {len(paths)} {composer} pieces from music21's corpus as ABC")
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.abc"):  # an earlier encoding's pieces
        old.unlink()
    written, skipped = [], {}
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        for stem, text, why in pool.map(_encode, paths, chunksize=8):
            if text is None:
                skipped[stem] = why
                continue
            (out / f"{stem}.abc").write_text(text)
            written.append(stem)
    manifest.write_text(
        json.dumps(
            {
                "composer": composer,
                "max_pieces": max_pieces,
                "encoding": VERSION,
                "written": written,
                "skipped": skipped,
            },
            indent=1,
        )
    )
    log(f"music corpus: wrote {len(written)} pieces to {out}, skipped {len(skipped)}")
    return out
