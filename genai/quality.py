"""Sample-quality metrics for image models, from a small classifier of the real data.

A classifier trained on the real training images gives (1) its held-out
accuracy, (2) features (its penultimate layer) for a Fréchet distance between
generated and held-out real images, and (3) labels for class coverage and for
checking that a conditional generator draws the class it was asked for.
Torch and scipy only (scipy imported where the Fréchet distance needs it).
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class Classifier(nn.Module):
    """Two convs and a 128-d feature layer; inputs in [0, 1], (N, C, S, S)."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, 32, 3, 1, 1),
            nn.ReLU(),
            nn.Conv2d(32, 64, 3, 2, 1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(4),
            nn.Flatten(),
            nn.Linear(64 * 16, 128),
            nn.ReLU(),
        )
        self.head = nn.Linear(128, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self(x).argmax(1)


def train_classifier(
    x: torch.Tensor, y: torch.Tensor, num_classes: int, epochs: int = 40, seed: int = 0
) -> Classifier:
    torch.manual_seed(seed)
    model = Classifier(x.shape[1], num_classes)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    for _ in range(epochs):
        for idx in torch.randperm(len(x)).split(128):
            # small random shifts: the classifier must not key on exact pixel positions
            xb = torch.roll(x[idx], shifts=tuple(torch.randint(-1, 2, (2,)).tolist()), dims=(2, 3))
            loss = F.cross_entropy(model(xb), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def cached_classifier(
    cache_dir: str | Path, x: torch.Tensor, y: torch.Tensor, num_classes: int
) -> tuple[Classifier, Path]:
    """Train once per dataset; weights in safetensors, keyed by the training data."""
    from safetensors.torch import load_file

    key = hashlib.sha256(x.numpy().tobytes() + y.numpy().tobytes()).hexdigest()[:16]
    path = Path(cache_dir).absolute() / f"classifier-{key}.safetensors"
    model = Classifier(x.shape[1], num_classes)
    if path.is_file():
        model.load_state_dict(load_file(path))
        return model.eval(), path
    model = train_classifier(x, y, num_classes)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_classifier(model, tmp)
    tmp.replace(path)
    return model, path


def save_classifier(model: Classifier, path: str | Path) -> None:
    """safetensors with the shape in its metadata, so ``load_classifier`` needs nothing else."""
    from safetensors.torch import save_file

    channels, num_classes = model.body[0].in_channels, model.head.out_features
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, path, metadata={"channels": str(channels), "num_classes": str(num_classes)})


def load_classifier(path: str | Path) -> Classifier:
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    model = Classifier(int(meta["channels"]), int(meta["num_classes"]))
    model.load_state_dict(load_file(path))
    return model.eval()


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^1/2) between two feature sets (N, D)."""
    from scipy import linalg  # here: a VAE worker, which never computes it, skips the import

    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    with warnings.catch_warnings():  # near-singular is expected with few samples; handled below
        warnings.simplefilter("ignore")
        covmean = linalg.sqrtm(cov_a @ cov_b)
    if not np.isfinite(
        covmean
    ).all():  # near-singular product: regularise, as in the FID reference code
        eps = np.eye(len(cov_a)) * 1e-6
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            covmean = linalg.sqrtm((cov_a + eps) @ (cov_b + eps))
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * np.real(covmean)))


@torch.no_grad()
def sample_quality(
    classifier: Classifier, samples: torch.Tensor, real_val: torch.Tensor, num_classes: int
) -> dict[str, float]:
    """FD against held-out real images and class coverage. Images in [0, 1]."""
    f_fake = classifier.features(samples.float()).numpy()
    f_real = classifier.features(real_val.float()).numpy()
    preds = classifier.predict(samples.float())
    return {
        "fd": frechet_distance(f_fake, f_real),
        "classes_covered": float(len(torch.unique(preds))),
        "class_entropy": float(_entropy(torch.bincount(preds, minlength=num_classes))),
    }


def _entropy(counts: torch.Tensor) -> torch.Tensor:
    p = counts.float() / counts.sum()
    return -(p[p > 0] * p[p > 0].log()).sum()
