"""The model: a mixture of diagonal Gaussians with learned weights, means and scales."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class MoGConfig:
    components: int = 8

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


class MixtureModel(nn.Module):
    def __init__(self, cfg: MoGConfig, init_scale: float = 1.0) -> None:
        super().__init__()
        self.cfg = cfg
        self.logits = nn.Parameter(torch.zeros(cfg.components))
        self.means = nn.Parameter(torch.randn(cfg.components, 2) * init_scale)
        self.log_scales = nn.Parameter(torch.full((cfg.components, 2), math.log(init_scale)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Negative log-likelihood of each point, in nats: (N, 2) -> (N,)."""
        z = (x[:, None, :] - self.means) / self.log_scales.exp()
        per = -0.5 * (z**2).sum(-1) - self.log_scales.sum(-1) - math.log(2 * math.pi)
        return -torch.logsumexp(per + torch.log_softmax(self.logits, 0), dim=1)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """(n, 2) points: a component by its weight, then a point from it."""
        probs = torch.softmax(self.logits.float(), 0)
        k = torch.multinomial(probs, n, replacement=True, generator=generator)
        eps = torch.randn(n, 2, generator=generator)
        return self.means.float()[k] + eps * self.log_scales.float().exp()[k]
