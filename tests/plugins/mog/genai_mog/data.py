"""Driver side: points on a ring of Gaussians, through the object store."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import ray


def ring(n: int, modes: int, radius: float, std: float, rng: np.random.Generator) -> np.ndarray:
    angles = 2 * math.pi * rng.integers(0, modes, n) / modes
    centres = radius * np.stack([np.cos(angles), np.sin(angles)], 1)
    return (centres + std * rng.standard_normal((n, 2))).astype(np.float32)


def true_nll(points: np.ndarray, modes: int, radius: float, std: float) -> float:
    """Mean NLL of ``points`` under the distribution that made them: the floor a model meets."""
    angles = 2 * math.pi * np.arange(modes) / modes
    centres = radius * np.stack([np.cos(angles), np.sin(angles)], 1)
    sq = ((points[:, None, :] - centres) ** 2).sum(-1) / std**2
    log_p = -0.5 * sq - 2 * math.log(std) - math.log(2 * math.pi) - math.log(modes)
    top = log_p.max(1, keepdims=True)
    return float(-(top[:, 0] + np.log(np.exp(log_p - top).sum(1))).mean())


def prepare(spec: Any, log=print) -> dict[str, Any]:
    d = spec.data
    rng = np.random.default_rng(d.seed)
    train, val = (
        ring(d.n_train, d.modes, d.radius, d.std, rng),
        ring(d.n_val, d.modes, d.radius, d.std, rng),
    )
    floor = true_nll(val, d.modes, d.radius, d.std)
    log(
        f"data: {len(train)} + {len(val)} held-out points, {d.modes} modes; true NLL {floor:.3f} nats"
    )
    return {
        "train_ref": ray.put(train),
        "val_ref": ray.put(val),
        "n_train_items": len(train),
        "true_nll": floor,
    }
