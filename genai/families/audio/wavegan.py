"""WaveGAN's generator and discriminator on raw waveforms, class-conditional (torch)."""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn

from genai.families.audio.config import AudioGANConfig


def _channels(cfg: AudioGANConfig) -> list[int]:
    """Channels at the seed and after each stage: d * 2^(k-1), ..., d, then 1 (WaveGAN's 16d
    ... d for k = 5)."""
    k = cfg.stages
    return [cfg.width * 2 ** (k - 1 - i) for i in range(k)] + [1]


class Generator(nn.Module):
    """z (+ one-hot class) -> dense -> 16 steps x 16d channels -> k transposed convolutions
    of stride 4 -> tanh waveform (N, 1, clip_samples) in [-1, 1]."""

    def __init__(self, cfg: AudioGANConfig) -> None:
        super().__init__()
        self.cfg = cfg
        ch = _channels(cfg)
        in_dim = cfg.latent_dim + (cfg.num_classes if cfg.conditional else 0)
        self.dense = nn.Linear(in_dim, 16 * ch[0])
        pad = cfg.kernel // 2 - 1  # stride 4, kernel 25: pad 11, output_padding 1 -> x4
        self.ups = nn.ModuleList(
            nn.ConvTranspose1d(a, b, cfg.kernel, 4, pad, output_padding=1)
            for a, b in itertools.pairwise(ch)
        )

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.cfg.conditional:
            if labels is None:
                raise ValueError("a conditional generator needs labels")
            z = torch.cat([z, F.one_hot(labels, self.cfg.num_classes).to(z.dtype)], dim=1)
        h = F.relu(self.dense(z)).view(len(z), -1, 16)
        for i, up in enumerate(self.ups):
            h = up(h)
            h = torch.tanh(h) if i == len(self.ups) - 1 else F.relu(h)
        return h

    def latents(
        self, n: int, generator: torch.Generator, labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """z, then (conditional, where ``labels`` is None) random classes, from one seed."""
        z = torch.randn(n, self.cfg.latent_dim, generator=generator)
        if self.cfg.conditional and labels is None:
            labels = torch.randint(0, self.cfg.num_classes, (n,), generator=generator)
        return z, labels


def phase_shuffle(x: torch.Tensor, n: int) -> torch.Tensor:
    """Shift each clip by a random -n..n samples, reflecting at the edges (WaveGAN's phase
    shuffle: the discriminator cannot key on the generator's checkerboard phase)."""
    if n == 0 or not torch.is_grad_enabled():
        return x
    shifts = torch.randint(-n, n + 1, (len(x),)).tolist()
    padded = F.pad(x, (n, n), mode="reflect")
    return torch.stack([padded[i, :, n - s : n - s + x.shape[-1]] for i, s in enumerate(shifts)])


class Discriminator(nn.Module):
    """k strided convolutions (LeakyReLU 0.2, phase shuffle between them) -> a logit;
    conditional by projection (Miyato and Koyama 2018)."""

    def __init__(self, cfg: AudioGANConfig) -> None:
        super().__init__()
        self.cfg = cfg
        ch = _channels(cfg)[::-1]
        pad = cfg.kernel // 2
        self.convs = nn.ModuleList(
            nn.Conv1d(a, b, cfg.kernel, 4, pad) for a, b in itertools.pairwise(ch)
        )
        self.out = nn.Linear(16 * ch[-1], 1)
        self.embed = nn.Embedding(cfg.num_classes, 16 * ch[-1]) if cfg.conditional else None

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        h = x
        for i, conv in enumerate(self.convs):
            h = F.leaky_relu(conv(h), 0.2)
            if i < len(self.convs) - 1:
                h = phase_shuffle(h, self.cfg.phase_shuffle)
        h = h.flatten(1)
        logits = self.out(h).squeeze(1)
        if self.embed is not None:
            if labels is None:
                raise ValueError("a conditional discriminator needs labels")
            logits = logits + (self.embed(labels) * h).sum(1)
        return logits
