"""Moving digits, built offline: Srivastava et al.'s Moving MNIST (ICML 2015) made from
scikit-learn's bundled 8x8 digits. One or two digits, upscaled, start at random places
with random velocities and bounce off the canvas's edges; a clip is their frames.

Everything is drawn from one seed, and a set of clips is cached by its parameters (written
whole or not at all). The digit images are split before any clip is drawn: held-out clips
are made only of held-out images, so no training clip shows a digit image the evaluation
uses.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from genai.data.arrays import save_whole

SOURCE_LEVELS = 16  # scikit-learn's digits are 0..16


@dataclass(frozen=True)
class ClipParams:
    """What a set of clips is made from; its hash names the cache file."""

    n: int
    canvas: int = 32
    frames: int = 16
    digit_size: int = 16
    max_digits: int = 2
    min_speed: float = 1.0  # pixels per frame
    max_speed: float = 3.0
    seed: int = 0

    def key(self, images: np.ndarray, pool: np.ndarray) -> str:
        raw = json.dumps(asdict(self), sort_keys=True).encode()
        raw += pool.astype(np.int64).tobytes() + images[pool].tobytes()
        return hashlib.sha256(raw).hexdigest()[:16]


@dataclass
class Clips:
    """``frames`` (N, T, H, W) uint8; per digit slot (``max_digits`` of them, -1 where a
    clip has fewer): ``digits`` (N, D) labels, ``images`` (N, D) indices into the source
    images, ``positions`` (N, T, D, 2) top-left corners (row, col) and ``velocities``
    (N, D, 2) at the first frame, in pixels per frame."""

    frames: np.ndarray
    digits: np.ndarray
    images: np.ndarray
    positions: np.ndarray
    velocities: np.ndarray

    def __len__(self) -> int:
        return len(self.frames)

    def save(self, path: Path) -> None:
        save_whole(path, compress=True, **asdict(self))

    @classmethod
    def load(cls, path: Path) -> Clips:
        with np.load(path, allow_pickle=False) as z:
            return cls(
                **{k: z[k] for k in ("frames", "digits", "images", "positions", "velocities")}
            )


def digit_images(size: int) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 digits upscaled to ``size`` x ``size`` (bilinear), uint8
    0..255, and their labels."""
    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy(d.images.astype(np.float32) / SOURCE_LEVELS)[:, None]
    up = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)[:, 0]
    return (up.clamp(0, 1) * 255).round().to(torch.uint8).numpy(), d.target.astype(np.int64)


def split_images(
    labels: np.ndarray, held_out_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(training, held-out) image indices: a seeded ``held_out_fraction`` of each digit's
    images held out, so every digit is in both."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        k = max(1, round(len(idx) * held_out_fraction))
        val.append(idx[:k])
        train.append(idx[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def bounce(start: np.ndarray, velocity: np.ndarray, frames: int, room: int) -> np.ndarray:
    """(frames, 2) positions from ``start`` moving by ``velocity`` per frame, reflected at 0
    and ``room`` (the canvas less the digit): a piecewise-linear path."""
    t = np.arange(frames, dtype=np.float64)[:, None]
    free = start[None] + velocity[None] * t
    period = 2.0 * room
    folded = np.mod(free, period)
    return np.where(folded > room, period - folded, folded)


def build(p: ClipParams, images: np.ndarray, labels: np.ndarray, pool: np.ndarray) -> Clips:
    """``p.n`` clips whose digits are drawn from the image indices in ``pool``."""
    rng = np.random.default_rng(p.seed)
    room = p.canvas - p.digit_size
    if room <= 0:
        raise ValueError(f"canvas ({p.canvas}) must be larger than digit_size ({p.digit_size})")
    n, d, t = p.n, p.max_digits, p.frames
    frames = np.zeros((n, t, p.canvas, p.canvas), np.uint8)
    digits = np.full((n, d), -1, np.int64)
    chosen = np.full((n, d), -1, np.int64)
    positions = np.zeros((n, t, d, 2), np.float32)
    velocities = np.zeros((n, d, 2), np.float32)
    for i in range(n):
        k = int(rng.integers(1, d + 1))
        for j in range(k):
            img = int(pool[rng.integers(len(pool))])
            start = rng.uniform(0, room, 2)
            angle = rng.uniform(0, 2 * np.pi)
            speed = rng.uniform(p.min_speed, p.max_speed)
            v = speed * np.array([np.sin(angle), np.cos(angle)])
            path = bounce(start, v, t, room)
            chosen[i, j], digits[i, j] = img, labels[img]
            positions[i, :, j], velocities[i, j] = path, v
            for f in range(t):
                r, c = np.round(path[f]).astype(int)
                window = frames[i, f, r : r + p.digit_size, c : c + p.digit_size]
                np.maximum(window, images[img], out=window)  # overlapping digits: the brighter
    return Clips(frames, digits, chosen, positions, velocities)


def cached(
    cache_dir: str | Path, p: ClipParams, images: np.ndarray, labels: np.ndarray, pool: np.ndarray
) -> tuple[Clips, Path]:
    """``build``, cached under ``cache_dir`` by the parameters and the pool's images."""
    path = Path(cache_dir) / f"moving-digits-{p.key(images, pool)}.npz"
    if path.is_file():
        return Clips.load(path), path
    clips = build(p, images, labels, pool)
    clips.save(path)
    return clips, path
