"""Clip-level quality measures that need no model: where the ink is in each frame, how
far its path is from a piecewise-linear one, and whether a clip keeps its identity."""

from __future__ import annotations

import numpy as np


def centroids(frames: np.ndarray) -> np.ndarray:
    """(N, T, H, W) intensities -> (N, T, 2) centre of mass (row, col) per frame, in
    pixels; the canvas centre for an empty frame."""
    x = frames.astype(np.float64)
    mass = x.sum((2, 3))
    h, w = x.shape[2:]
    rows = (x.sum(3) * np.arange(h)).sum(2)
    cols = (x.sum(2) * np.arange(w)).sum(2)
    empty = mass <= 0
    safe = np.where(empty, 1.0, mass)
    out = np.stack([rows / safe, cols / safe], axis=-1)
    out[empty] = [(h - 1) / 2, (w - 1) / 2]
    return out


WINDOW = 4  # frames per local line fit


def motion_residual(frames: np.ndarray, window: int = WINDOW) -> np.ndarray:
    """Per clip, how far the centre of mass is from moving in straight lines: a line is
    fit (least squares) to every ``window`` consecutive frames on each axis, and the
    median over windows and axes of the fits' RMS residual, in pixels. Moving at a
    constant velocity it is only the whole-pixel rounding of where a digit is drawn; a
    reflection off an edge (or two digits' paths summed) bends the path in a few windows,
    which the median passes over; jitter and jumps raise it."""
    c = centroids(frames)  # (N, T, 2)
    t = np.arange(window, dtype=np.float64)
    t = t - t.mean()
    wins = np.lib.stride_tricks.sliding_window_view(c, window, axis=1)  # (N, T-w+1, 2, w)
    centred = wins - wins.mean(-1, keepdims=True)
    slope = (centred * t).sum(-1, keepdims=True) / (t**2).sum()
    rms = np.sqrt(((centred - slope * t) ** 2).mean(-1))
    return np.median(rms.reshape(len(c), -1), axis=1)


def identity_consistency(per_frame: np.ndarray) -> float:
    """The share of clips whose frames all get the same label, (N, T) labels."""
    return float((per_frame == per_frame[:, :1]).all(1).mean())
