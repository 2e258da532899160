"""Convolutional VAE with a Gaussian latent. Torch; the config
(:class:`~genai.models.image_configs.VAEConfig`) is torch-free.

Images are (N, C, S, S) in [0, 1]. The decoder's likelihood is Bernoulli (for
near-binary images) or Gaussian with a learned per-pixel scale (for
dequantized intensities, where the bound is a proper density in nats and can
be compared with other density models such as a diagonal Gaussian).
All bounds are per image, in nats.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from genai.models.image_configs import VAEConfig

_LOG_2PI = math.log(2 * math.pi)


def importance_weighted(
    mu: torch.Tensor,
    logvar: torch.Tensor,
    log_px: Callable[[torch.Tensor], torch.Tensor],
    k: int,
) -> torch.Tensor:
    """-log p(x) <= this (Burda et al.), per item, from a diagonal Gaussian posterior
    (``mu``, ``logvar``), a standard normal prior and ``log_px(z)`` = log p(x | z)."""
    std = torch.exp(0.5 * logvar)
    logws = []
    for _ in range(k):
        eps = torch.randn_like(mu)
        z = mu + eps * std
        log_q = (-0.5 * eps.pow(2) - 0.5 * logvar - 0.5 * _LOG_2PI).sum(1)
        log_prior = (-0.5 * z.pow(2) - 0.5 * _LOG_2PI).sum(1)
        logws.append(log_px(z) + log_prior - log_q)
    return -(torch.logsumexp(torch.stack(logws), 0) - math.log(k))


class VAE(nn.Module):
    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        enc: list[nn.Module] = [nn.Conv2d(cfg.channels, cfg.width, 3, 1, 1), nn.SiLU()]
        width = cfg.width
        for _ in range(cfg.stages):
            enc += [nn.Conv2d(width, width * 2, 4, 2, 1), nn.SiLU()]
            width *= 2
        self.encoder = nn.Sequential(*enc, nn.Flatten())
        self.to_stats = nn.Linear(width * 16, 2 * cfg.latent_dim)
        self.from_latent = nn.Sequential(nn.Linear(cfg.latent_dim, width * 16), nn.SiLU())
        dec: list[nn.Module] = []
        for _ in range(cfg.stages):
            dec += [nn.ConvTranspose2d(width, width // 2, 4, 2, 1), nn.SiLU()]
            width //= 2
        self.decoder = nn.Sequential(*dec, nn.Conv2d(width, cfg.channels, 3, 1, 1))
        self.top = cfg.width * 2**cfg.stages
        pixels = cfg.channels * cfg.image_size**2
        # learned per-pixel log-scale of the Gaussian decoder (unused for Bernoulli)
        self.log_scale = nn.Parameter(torch.full((pixels,), -2.0))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.to_stats(self.encoder(x)).chunk(2, dim=1)  # (N, D) each
        return mu, logvar.clamp(-12, 8)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Decoder output: logits (Bernoulli) or means (Gaussian), (N, C, S, S)."""
        h = self.from_latent(z).view(-1, self.top, 4, 4)
        return self.decoder(h)

    def mean_image(self, z: torch.Tensor) -> torch.Tensor:
        out = self.decode(z)
        return torch.sigmoid(out) if self.cfg.likelihood == "bernoulli" else out.clamp(0, 1)

    def log_px(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """log p(x | z) per image, (N,)."""
        if self.cfg.likelihood == "bernoulli":
            return -F.binary_cross_entropy_with_logits(out, x, reduction="none").flatten(1).sum(1)
        ls = self.log_scale.to(out.dtype)
        d = (x - out).flatten(1)
        return (-0.5 * (d * torch.exp(-ls)) ** 2 - ls - 0.5 * _LOG_2PI).sum(1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-image reconstruction NLL, KL and negative ELBO (nats), with one reparameterised sample."""
        mu, logvar = self.encode(x)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        recon = -self.log_px(x, self.decode(z))
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)
        return {"recon": recon, "kl": kl, "neg_elbo": recon + kl}

    @torch.no_grad()
    def iw_bound(self, x: torch.Tensor, k: int = 64) -> torch.Tensor:
        """Importance-weighted bound (Burda et al.): -log p(x) <= this, per image, tighter than the ELBO."""
        mu, logvar = self.encode(x)
        return importance_weighted(mu, logvar, lambda z: self.log_px(x, self.decode(z)), k)

    def latents(
        self, n: int, generator: torch.Generator | None = None, labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, None]:
        """Prior draws on the CPU (``labels`` is accepted for the image families' common
        interface and ignored: the VAE is unconditional)."""
        return torch.randn(n, self.cfg.latent_dim, generator=generator), None

    @torch.no_grad()
    def images(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Decoded means in [0, 1] from latents (moved to the model's device and dtype)."""
        p = next(self.parameters())
        return self.mean_image(z.to(p.device, p.dtype))

    def sample(
        self, n: int, generator: torch.Generator | None = None, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``n`` images in [0, 1] from the prior."""
        return self.images(*self.latents(n, generator))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.mean_image(self.encode(x)[0])

    @torch.no_grad()
    def interpolate(self, a: torch.Tensor, b: torch.Tensor, steps: int) -> torch.Tensor:
        """Decoded means along the straight line between the two posterior means, (steps, C, S, S)."""
        za, zb = self.encode(torch.stack([a, b]))[0]
        t = torch.linspace(0, 1, steps, device=za.device, dtype=za.dtype)[:, None]
        return self.mean_image((1 - t) * za + t * zb)
