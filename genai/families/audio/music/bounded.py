"""music21 on untrusted text, in a child process with a deadline.

A sampled piece can send music21's ABC reader into minutes of work (a malformed tuplet or
length); a replica thread or a judging loop must not hang on it. One spawned worker per
process stays warm (music21 imported once); a piece that runs past its deadline is counted
as unparseable and the worker is replaced."""

from __future__ import annotations

import multiprocessing
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

DEADLINE_S = 20.0
_lock = threading.Lock()
_pool: ProcessPoolExecutor | None = None


def _executor() -> ProcessPoolExecutor:
    global _pool
    if _pool is None:
        _pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
    return _pool


def _reset() -> None:
    global _pool
    if _pool is not None:
        for proc in list(getattr(_pool, "_processes", {}).values()):
            proc.kill()  # a worker stuck in music21 ignores a polite shutdown
        _pool.shutdown(wait=False, cancel_futures=True)
    _pool = None


def run(fn: Any, *args: Any, deadline_s: float = DEADLINE_S) -> Any:
    """``fn(*args)`` in the worker; ValueError if it takes longer than ``deadline_s``."""
    with _lock:  # one piece at a time: the worker is single
        future = _executor().submit(fn, *args)
        try:
            return future.result(timeout=deadline_s)
        except FutureTimeout:
            _reset()
            raise ValueError(f"music21 took longer than {deadline_s:.0f} s over it") from None
