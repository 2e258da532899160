"""DCGAN-style generator and discriminator, optionally class-conditional. Torch; the config
(:class:`~genai.models.image_configs.GANConfig`) is torch-free.

Images are (N, C, S, S) in [-1, 1] with S in {8, 16, 32, 64}. Both nets work
on a 4x4 base: the generator upsamples from it (transposed convs that double
the size), the discriminator downsamples to it (strided convs that halve it).
The discriminator has no batch norm: it scores real and fake images in one
batch, and batch statistics would leak between them. The conditional
discriminator is a projection discriminator (Miyato & Koyama, 2018).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from genai.models.image_configs import GANConfig


class Generator(nn.Module):
    def __init__(self, cfg: GANConfig) -> None:
        super().__init__()
        self.cfg = cfg
        top = cfg.g_width * 2**cfg.stages
        in_dim = cfg.latent_dim + (cfg.num_classes if cfg.conditional else 0)
        self.project = nn.Sequential(
            nn.Linear(in_dim, top * 16), nn.BatchNorm1d(top * 16), nn.ReLU(True)
        )
        blocks: list[nn.Module] = []
        width = top
        for _ in range(cfg.stages):
            blocks += [
                nn.ConvTranspose2d(width, width // 2, 4, 2, 1, bias=False),
                nn.BatchNorm2d(width // 2),
                nn.ReLU(True),
            ]
            width //= 2
        self.blocks = nn.Sequential(*blocks)
        self.to_image = nn.Conv2d(width, cfg.channels, 3, 1, 1)
        self.top = top

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.cfg.conditional:
            if labels is None:
                raise ValueError("a conditional generator needs labels")
            z = torch.cat([z, F.one_hot(labels, self.cfg.num_classes).to(z.dtype)], dim=1)
        h = self.project(z).view(-1, self.top, 4, 4)  # (N, top, 4, 4)
        return torch.tanh(self.to_image(self.blocks(h)))  # (N, C, S, S)

    def latents(
        self, n: int, generator: torch.Generator | None = None, labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """What ``n`` samples start from, on the CPU, drawn from ``generator`` in this order:
        z, then (conditional, where ``labels`` is None) random classes. Every sampler uses
        this (training's pictures and quality, serving), so a seed means the same images."""
        z = torch.randn(n, self.cfg.latent_dim, generator=generator)
        if self.cfg.conditional and labels is None:
            labels = torch.randint(0, self.cfg.num_classes, (n,), generator=generator)
        return z, labels if self.cfg.conditional else None

    @staticmethod
    def to_unit(x: torch.Tensor) -> torch.Tensor:
        """Generator output ([-1, 1]) as images in [0, 1]."""
        return (x + 1) / 2

    @torch.no_grad()
    def images(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Images in [0, 1] from latents (moved to the generator's device and dtype)."""
        p = next(self.parameters())
        labels = None if labels is None else labels.to(p.device)
        return self.to_unit(self(z.to(p.device, p.dtype), labels))

    def sample(
        self, n: int, generator: torch.Generator | None = None, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``n`` images in [0, 1]."""
        return self.images(*self.latents(n, generator, labels))


class Discriminator(nn.Module):
    def __init__(self, cfg: GANConfig) -> None:
        super().__init__()
        self.cfg = cfg
        layers: list[nn.Module] = [
            nn.Conv2d(cfg.channels, cfg.d_width, 3, 1, 1),
            nn.LeakyReLU(0.2, True),
        ]
        width = cfg.d_width
        for _ in range(cfg.stages):
            layers += [nn.Conv2d(width, width * 2, 4, 2, 1), nn.LeakyReLU(0.2, True)]
            width *= 2
        self.features = nn.Sequential(*layers)
        self.out = nn.Linear(width * 16, 1)
        self.embed = nn.Embedding(cfg.num_classes, width * 16) if cfg.conditional else None

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        h = self.features(x).flatten(1)  # (N, width*16)
        logits = self.out(h).squeeze(1)  # (N,)
        if self.embed is not None:
            if labels is None:
                raise ValueError("a conditional discriminator needs labels")
            logits = logits + (self.embed(labels) * h).sum(1)  # projection term
        return logits


def d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "hinge":
        return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()
    return (
        F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()
    )  # -log D(x) - log(1 - D(G(z)))


def g_loss(fake_logits: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "hinge":
        return -fake_logits.mean()
    return F.softplus(-fake_logits).mean()  # non-saturating: -log D(G(z))
