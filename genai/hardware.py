"""What this machine computes well: native bf16 or not, and a one-line description.

Light on purpose (no DeepSpeed, no Ray): the driver, the workers and the benchmarks use it.
"""

from __future__ import annotations

import functools
import os
import platform
from pathlib import Path


@functools.cache
def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: without them a bf16 matmul on the CPU is a slow emulation,
    tens of times slower than fp32."""
    flags = _cpuinfo()
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str) -> str:
    """``auto`` -> ``bf16`` where the hardware computes in it natively, else ``fp32``."""
    if precision != "auto":
        return precision
    import torch

    return "bf16" if torch.cuda.is_available() or cpu_has_native_bf16() else "fp32"


def cpu_model() -> str:
    for line in _cpuinfo().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine_line() -> str:
    """The head line of every benchmark: figures from different CPUs do not compare."""
    bf16 = "native" if cpu_has_native_bf16() else "emulated (precision auto = fp32)"
    return f"machine: {cpu_model()}, {os.cpu_count()} CPUs, bf16 {bf16}"
