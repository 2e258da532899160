"""``python -m genai.families.audio.music``: write the music corpus; judge a music model.

python -m genai.families.audio.music corpus --composer bach --out data/music-bach
python -m genai.families.audio.music judge runs/music-bach/checkpoints/latest
"""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m genai.families.audio.music")
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("corpus", help="music21's corpus as ABC files, one per piece")
    c.add_argument("--composer", default="bach", help="a music21 corpus composer (bach, ...)")
    c.add_argument("--out", required=True, help="directory for the .abc files")
    c.add_argument("--max-pieces", type=int, default=None)
    j = sub.add_parser("judge", help="music21's verdict on a music model's pieces")
    j.add_argument("checkpoint")
    j.add_argument("--pieces", type=int, default=50, help="pieces to generate")
    j.add_argument("--max-tokens", type=int, default=768)
    j.add_argument("--seed", type=int, default=0)
    j.add_argument(
        "--temperature", type=float, default=None, help="sampling temperature (the route's)"
    )
    args = p.parse_args(argv)
    try:
        if args.cmd == "corpus":
            from genai.families.audio.music.corpus import export

            export(args.composer, args.out, args.max_pieces, log=print)
        else:
            from genai.families.audio.music.judge import judge_checkpoint
            from genai.families.audio.music.serve import TEMPERATURE

            t = TEMPERATURE if args.temperature is None else args.temperature
            out = judge_checkpoint(args.checkpoint, args.pieces, args.max_tokens, args.seed, t)
            print(json.dumps(out, indent=1))
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
