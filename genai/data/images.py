"""Images for the GAN and VAE families: bundled digits, an image folder, or Parquet.

Images are kept as integer intensity levels, ``q`` in ``[0, levels)`` with shape
(N, C, S, S) (uint8), so each family can map them to what it models:
GANs to [-1, 1], Bernoulli VAEs to [0, 1], Gaussian VAEs to dequantized
``(q + u) / levels`` (a proper density in nats, comparable across models).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F

from genai.config import SpecError
from genai.families.images import ImageDataSpec

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif"}


@dataclass
class ImageData:
    train: np.ndarray  # (N, C, S, S) uint8 levels
    val: np.ndarray
    train_labels: np.ndarray | None  # (N,) int64
    val_labels: np.ndarray | None
    levels: int  # 17 for digits (0..16), 256 for 8-bit images
    class_names: list[str]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def load_images(spec: ImageDataSpec, image_size: int, channels: int) -> ImageData:
    if spec.source == "digits":
        from sklearn.datasets import load_digits  # ships with scikit-learn: no download

        d = load_digits()
        q = d.images.astype(np.float32)[:, None]  # (N, 1, 8, 8) in 0..16
        labels, levels, names = d.target.astype(np.int64), 17, [str(i) for i in range(10)]
    else:
        src = Path(spec.source).expanduser()
        if src.is_dir():
            q, labels, names = _read_folder(src, spec, image_size, channels)
        elif src.suffix.lower() == ".parquet" and src.is_file():
            q, labels, names = _read_parquet(src, spec, image_size, channels)
        else:
            raise SpecError(
                f"data.source {spec.source!r} is neither 'digits', an image folder nor a .parquet file"
            )
        levels = 256
    q = _fit(q, image_size, channels, levels)
    order = np.random.default_rng(spec.seed).permutation(len(q))[: spec.max_images]
    n_val = max(1, round(len(order) * spec.val_fraction))
    val_idx, train_idx = order[:n_val], order[n_val:]
    if len(train_idx) < 2:
        raise SpecError(f"data.source {spec.source!r} has {len(q)} image(s); too few to train on")
    return ImageData(
        train=q[train_idx],
        val=q[val_idx],
        train_labels=None if labels is None else labels[train_idx],
        val_labels=None if labels is None else labels[val_idx],
        levels=levels,
        class_names=names,
    )


def _fit(q: np.ndarray, size: int, channels: int, levels: int) -> np.ndarray:
    """Resize (bilinear, then back to integer levels) and match the channel count."""
    x = torch.from_numpy(np.ascontiguousarray(q, dtype=np.float32))
    if x.shape[-1] != size:
        x = F.interpolate(
            x, size=(size, size), mode="bilinear", align_corners=False, antialias=True
        )
    if x.shape[1] != channels:
        x = x.expand(-1, 3, -1, -1) if channels == 3 else x.mean(1, keepdim=True)
    return x.round().clamp(0, levels - 1).to(torch.uint8).numpy()


def decode_image(blob: bytes, size: int, channels: int) -> np.ndarray:
    """Encoded bytes -> (C, size, size) float32 in 0..255 (center-cropped to a square)."""
    from PIL import Image

    with Image.open(io.BytesIO(blob)) as img:
        img = img.convert("L" if channels == 1 else "RGB")
        w, h = img.size
        side = min(w, h)
        img = img.crop(((w - side) // 2, (h - side) // 2, (w + side) // 2, (h + side) // 2))
        if side != size:
            img = img.resize((size, size), Image.Resampling.BILINEAR)
        arr = np.asarray(img, dtype=np.float32)
    return arr[None] if channels == 1 else arr.transpose(2, 0, 1)


def _read_folder(src: Path, spec: ImageDataSpec, size: int, channels: int):
    files = sorted(p for p in src.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[
        : spec.max_images
    ]
    if not files:
        raise SpecError(f"data.source {src} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    images = []
    for p in files:
        try:
            images.append(decode_image(p.read_bytes(), size, channels))
        except Exception as exc:  # Pillow raises many types; name the file
            raise SpecError(f"data.source: cannot decode {p}: {exc}") from None
    dirs = sorted({p.parent.relative_to(src).as_posix() for p in files})
    if spec.labels_from_dirs and len(dirs) >= 2 and "." not in dirs:
        index = {d: i for i, d in enumerate(dirs)}
        labels = np.array(
            [index[p.parent.relative_to(src).as_posix()] for p in files], dtype=np.int64
        )
        return np.stack(images), labels, dirs
    return np.stack(images), None, []


def _read_parquet(src: Path, spec: ImageDataSpec, size: int, channels: int):
    table = pq.read_table(src)
    if spec.image_column not in table.column_names:
        raise SpecError(
            f"{src}: no column data.image_column={spec.image_column!r} (columns: {table.column_names})"
        )
    blobs = table.column(spec.image_column).to_pylist()[: spec.max_images]
    images = []
    for i, blob in enumerate(blobs):
        if isinstance(
            blob, dict
        ):  # Hugging Face datasets store images as {"bytes": ..., "path": ...}
            blob = blob.get("bytes")
        try:
            images.append(decode_image(blob, size, channels))
        except Exception as exc:
            raise SpecError(
                f"{src}: row {i} of data.image_column is not a decodable image: {exc}"
            ) from None
    labels, names = None, []
    if spec.label_column:
        if spec.label_column not in table.column_names:
            raise SpecError(f"{src}: no column data.label_column={spec.label_column!r}")
        labels = np.asarray(
            table.column(spec.label_column).to_pylist()[: spec.max_images], dtype=np.int64
        )
        names = [str(i) for i in range(int(labels.max()) + 1)]
    return np.stack(images), labels, names


def to_model_range(
    q: torch.Tensor, levels: int, target: str, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Integer levels -> the range a family models: 'gan' [-1, 1], 'unit' [0, 1], 'dequant' (q+u)/levels."""
    q = q.float()
    if target == "gan":
        return q / (levels - 1) * 2 - 1
    if target == "unit":
        return q / (levels - 1)
    u = torch.rand(q.shape, generator=generator, device=q.device)
    return (q + u) / levels


def diagonal_gaussian_nll(train: np.ndarray, val: np.ndarray, levels: int, seed: int = 0) -> float:
    """Held-out NLL (nats per image) of a per-pixel Gaussian fit to dequantized training pixels."""
    g = torch.Generator().manual_seed(seed)
    xt = to_model_range(torch.from_numpy(train), levels, "dequant", g).flatten(1).double()
    xv = to_model_range(torch.from_numpy(val), levels, "dequant", g).flatten(1).double()
    mu, var = xt.mean(0), xt.var(0)
    nll = 0.5 * (torch.log(2 * torch.pi * var) + (xv - mu) ** 2 / var)
    return float(nll.sum(1).mean())
