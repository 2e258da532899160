"""PNG output: image grids (Pillow) and training curves (matplotlib, headless)."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import torch


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(N, C, S, S) in [0, 1] -> (N, S, S, C) uint8."""
    x = (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def png_bytes(image: torch.Tensor, scale: int = 1) -> bytes:
    """One (C, S, S) image in [0, 1] -> PNG bytes (optionally upscaled, nearest)."""
    from PIL import Image

    arr = to_uint8(image[None])[0]
    img = Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def save_grid(
    images: torch.Tensor, path: Path, cols: int | None = None, scale: int = 4, pad: int = 1
) -> Path:
    """A grid PNG of (N, C, H, W) images in [0, 1], row-major, upscaled for viewing."""
    from PIL import Image

    arr = to_uint8(images)
    n, h, w, c = arr.shape  # not only square: spectrograms are mels x frames
    cols = cols or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), 128, np.uint8)
    for i in range(n):
        r, k = divmod(i, cols)
        grid[
            pad + r * (h + pad) : pad + r * (h + pad) + h,
            pad + k * (w + pad) : pad + k * (w + pad) + w,
        ] = arr[i]
    img = Image.fromarray(grid[..., 0] if c == 1 else grid)
    img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def save_curves(curves: list[dict[str, float]], path: Path, title: str) -> Path:
    """One panel per metric, against step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # constants (reference values) and bookkeeping make flat, uninformative panels
    skip = {
        "step",
        "lr",
        "time_to_first_step_s",
        "tokens_per_s",
        "images_per_s",
        "real_fd_floor",
        "classifier_accuracy",
        "baseline_gaussian_nll",
        "kl_weight",
    }
    keys = sorted(
        {k for c in curves for k in c if k not in skip and isinstance(c[k], (int, float))}
    )
    cols = min(3, max(1, len(keys)))
    rows = max(1, math.ceil(len(keys) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False)
    for ax, key in zip(axes.flat, keys, strict=False):
        pts = [(c["step"], c[key]) for c in curves if key in c]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="." if len(pts) < 30 else None)
        ax.set_title(key)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys) :]:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
