"""Start-up phase marks for ``bench/cold_start.py``: off unless ``GENAI_TIMELINE`` names a
file, then the driver and rank 0 append one JSON line per phase (wall-clock seconds)."""

from __future__ import annotations

import json
import os
import time

ENV = "GENAI_TIMELINE"


def mark(phase: str) -> None:
    path = os.environ.get(ENV)
    if not path:
        return
    with open(path, "a") as f:
        f.write(json.dumps({"phase": phase, "t": time.time(), "pid": os.getpid()}) + "\n")
