"""Arrays cached on disk as ``.npz``, written whole or not at all."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def save_whole(path: Path, compress: bool = False, **arrays: np.ndarray) -> None:
    """Write ``arrays`` to ``path`` through a temporary sibling renamed into place: a
    killed writer leaves no half file that a reader would take for a cache."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
    try:
        (np.savez_compressed if compress else np.savez)(tmp, **arrays)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
