"""The generation log as ``genai generations`` shows it: filtered, exported to Parquet or
CSV, or printed as a table."""

from __future__ import annotations

import os
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa

from genai.serve import genlog
from genai.serve.logcrypt import Cipher, load_key

KEY_ENV = "GENAI_LOG_KEY"


def since(text: str) -> datetime:
    """'90s' / '30m' / '1h' / '2d' ago, or an ISO 8601 time (UTC unless it says)."""
    units = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
    if text[:-1].replace(".", "", 1).isdigit() and text[-1:] in units:
        return datetime.now(timezone.utc) - timedelta(**{units[text[-1]]: float(text[:-1])})
    try:
        # Python 3.10's fromisoformat reads no 'Z' suffix
        when = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    except ValueError:
        raise ValueError(f"--since: {text!r} is neither 30m/1h/2d nor an ISO 8601 time") from None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def select(
    directory: Path,
    model: str | None = None,
    after: str | None = None,
    min_score: float | None = None,
    max_score: float | None = None,
    limit: int = 0,
    key_file: str | None = None,
) -> pa.Table:
    """The log's rows that match, oldest first (the newest ``limit`` of them, if given).
    An encrypted log is read with the key from ``key_file`` or ``$GENAI_LOG_KEY``."""
    if not directory.is_dir():
        raise FileNotFoundError(f"--dir: no generation log at {directory}")
    cipher = None
    if key_file or os.environ.get(KEY_ENV):
        cipher = Cipher(load_key(key_file, KEY_ENV))
    table, skipped = genlog.read(
        directory, model, since(after) if after else None, min_score, max_score, cipher
    )
    for path, why in skipped:
        print(f"genai: skipped {path.name} ({why})", file=sys.stderr)
    return table.slice(max(0, table.num_rows - limit)) if limit else table


def export(table: pa.Table, out: Path) -> None:
    if out.suffix == ".parquet":
        import pyarrow.parquet as pq

        pq.write_table(table, out)
    elif out.suffix == ".csv":
        import pyarrow.csv as pacsv

        # CSV has no lists: a list column (a family's image digests ...) joined with spaces
        for i, field in enumerate(table.schema):
            if pa.types.is_list(field.type):
                joined = [" ".join(map(str, v or [])) for v in table[field.name].to_pylist()]
                table = table.set_column(i, field.name, [joined])
        pacsv.write_csv(table, out)
    else:
        raise ValueError(f"--out: {out.name} must end in .parquet or .csv")


def export_dataset(table: pa.Table, out: Path) -> int:
    """Logged generations as a synthetic corpus (``data.synthetic`` of a job spec): one
    JSONL record per successful text generation, ``text`` = prompt + output, with the
    generation id, model and score it came from; ``dataset.json`` marks it synthetic."""
    import json

    rows = [
        r
        for r in table.to_pylist()
        if r["status"] == 200 and isinstance(r["output"], str) and r["output"]
    ]
    if not rows:
        raise ValueError("--dataset: no generation matched with text to export (metadata mode?)")
    out.mkdir(parents=True, exist_ok=True)
    with (out / "generations.jsonl").open("w", encoding="utf-8") as fh:
        for r in rows:
            record = {
                "text": (r["prompt"] or "") + r["output"],
                "generation_id": r["id"],
                "model": r["model"],
                "score": r["score"],
                "time": r["time"].isoformat(),
                "origin": "synthetic",
            }
            fh.write(json.dumps(record) + "\n")
    summary = {
        "origin": "synthetic",
        "documents": len(rows),
        "models": sorted({r["model"] or "" for r in rows}),
    }
    (out / "dataset.json").write_text(json.dumps(summary, indent=2))
    return len(rows)


def show(rows: list[dict[str, Any]], width: int) -> None:
    def cut(text: str | None) -> str:
        text = (text or "").replace("\n", "\\n")
        return text if len(text) <= width else text[: width - 1] + "…"

    cols = ("time", "id", "model", "step", "key", "status", "latency", "tokens", "score")
    lines = [(*cols, "prompt", "output")]
    for r in rows:
        images = r.get("image_sha256") or []
        tokens = f"{r['prompt_tokens']}+{r['completion_tokens']}" if r.get("prompt_tokens") else ""
        lines.append(
            (
                r["time"].strftime("%Y-%m-%d %H:%M:%S"),
                r["id"],
                r["model"] or "",
                str(r["step"] if r["step"] is not None else ""),
                r["key"] or "",
                str(r["status"]),
                f"{r['latency_s'] * 1000:.0f}ms",
                tokens or (f"{len(images)} img" if images else ""),
                "" if r["score"] is None else f"{r['score']:g}",
                cut(r["prompt"]),
                cut(r["output"]),
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    for line in lines:
        print("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())
    print(f"({len(rows)} generations)")
