"""The benchmark's model: 3x32x32 uint8 images drawn in microseconds and a 1k-parameter denoiser,
so that what a run measures is the stages' memory and I/O, not a network's compute."""
from __future__ import annotations

import torch
from torch import nn

from neon_steps.models.base import Adapter


class TinyImages(Adapter):
    family = "diffusion"

    def build(self, arch):
        return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.SiLU(), nn.Conv2d(8, 3, 3, padding=1))

    def sample(self, n, generator, kappa, labels=None):
        return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=generator)

    def loss(self, batch, generator, labels=None):
        x = batch.float() / 127.5 - 1
        noise = torch.randn(x.shape, generator=generator)
        return (self.net(x + noise) - noise).square().mean()

    def nfe(self, kappa):
        return 1
