"""A conditional 3-D convolutional VAE on clips (N, 1, T, S, S) in [0, 1], Gaussian
likelihood with a learned per-voxel scale on dequantized intensities, so every bound is a
density in nats per clip (as the image VAE's, in nats per image)."""

from __future__ import annotations

import math

import torch
from torch import nn

from genai.families.video.config import VideoVAEConfig
from genai.models.vae import importance_weighted

_LOG_2PI = math.log(2 * math.pi)


def _kernel(stride: tuple[int, int, int]) -> tuple[int, int, int]:
    """4 where the stride is 2 (an even kernel halves or doubles exactly), else 3."""
    t, h, w = (4 if x == 2 else 3 for x in stride)
    return t, h, w


def _strides(cfg: VideoVAEConfig) -> list[tuple[int, int, int]]:
    """Per stage (time, height, width): space halves every stage, time (16 -> 4) in the
    last two."""
    k = cfg.space_stages
    return [(2 if i >= k - 2 else 1, 2, 2) for i in range(k)]


class VideoVAE(nn.Module):
    def __init__(self, cfg: VideoVAEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        enc: list[nn.Module] = [nn.Conv3d(1, cfg.width, 3, 1, 1), nn.SiLU()]
        width = cfg.width
        for s in _strides(cfg):
            enc += [nn.Conv3d(width, width * 2, _kernel(s), s, 1), nn.SiLU()]
            width *= 2
        self.encoder = nn.Sequential(*enc, nn.Flatten())
        self.top = width
        flat = width * 4 * 4 * 4
        self.to_stats = nn.Linear(flat + cfg.num_classes, 2 * cfg.latent_dim)
        self.from_latent = nn.Sequential(
            nn.Linear(cfg.latent_dim + cfg.num_classes, flat), nn.SiLU()
        )
        dec: list[nn.Module] = []
        for s in reversed(_strides(cfg)):
            dec += [nn.ConvTranspose3d(width, width // 2, _kernel(s), s, 1), nn.SiLU()]
            width //= 2
        self.decoder = nn.Sequential(*dec, nn.Conv3d(width, 1, 3, 1, 1))
        self.log_scale = nn.Parameter(torch.full((cfg.frames * cfg.size**2,), -2.0))

    def condition(self, labels: torch.Tensor) -> torch.Tensor:
        """(N, D) digit labels, -1 for an empty slot -> (N, classes) counts."""
        valid = labels >= 0
        counts = torch.zeros(len(labels), self.cfg.num_classes, device=labels.device)
        counts.scatter_add_(1, labels.clamp(min=0), valid.float())
        return counts

    def encode(self, x: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.cat([self.encoder(x), c.to(x.dtype)], dim=1)
        mu, logvar = self.to_stats(h).chunk(2, dim=1)
        return mu, logvar.clamp(-12, 8)

    def decode(self, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """Means (N, 1, T, S, S)."""
        h = self.from_latent(torch.cat([z, c.to(z.dtype)], dim=1))
        return self.decoder(h.view(-1, self.top, 4, 4, 4))

    def log_px(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        ls = self.log_scale.to(out.dtype)
        d = (x - out).flatten(1)
        return (-0.5 * (d * torch.exp(-ls)) ** 2 - ls - 0.5 * _LOG_2PI).sum(1)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-clip reconstruction NLL, KL and negative ELBO (nats), one reparameterised
        sample."""
        c = self.condition(labels)
        mu, logvar = self.encode(x, c)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        recon = -self.log_px(x, self.decode(z, c))
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)
        return {"recon": recon, "kl": kl, "neg_elbo": recon + kl}

    @torch.no_grad()
    def iw_bound(self, x: torch.Tensor, labels: torch.Tensor, k: int = 16) -> torch.Tensor:
        """Importance-weighted bound (Burda et al.) per clip: -log p(x | c) <= this."""
        c = self.condition(labels)
        mu, logvar = self.encode(x, c)
        return importance_weighted(mu, logvar, lambda z: self.log_px(x, self.decode(z, c)), k)

    @torch.no_grad()
    def clips(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Decoded means in [0, 1], (N, T, S, S)."""
        return self.decode(z, self.condition(labels))[:, 0].clamp(0, 1)
