"""Helpers shared by the end-to-end tests (plain functions; fixtures live in conftest.py)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from genai.train import checkpoint as ckpt


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kill_after_first_checkpoint(spec_path: Path, root: Path) -> tuple[list[str], int]:
    """Start `genai train SPEC`, SIGKILL its whole process group once a checkpoint is
    committed, and return the command and the step of the checkpoint it left."""
    cmd = [sys.executable, "-m", "genai.cli", "train", str(spec_path)]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        deadline = time.time() + 240
        while ckpt.find_latest(root) is None and time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert ckpt.find_latest(root) is not None, "no checkpoint appeared"
        time.sleep(1.0)
        assert proc.poll() is None, "the run ended before it could be killed"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    time.sleep(3)  # let Ray's fate-shared workers exit
    return cmd, ckpt.read_meta(ckpt.find_latest(root))["step"]


def resume(cmd: list[str], max_steps: int) -> subprocess.CompletedProcess:
    r = subprocess.run(
        [*cmd, "--resume", "--set", f"train.max_steps={max_steps}"],
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return r
