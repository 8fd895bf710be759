"""The paper's 2-D toy models (Appendix B.11): a DDPM with an MLP ε-predictor whose sampler
scales the score by ζ, and an autoregressive model p(x1)·p(x2|x1) over binned coordinates
sampled with temperature τ."""
from __future__ import annotations

import math
from typing import Any, Mapping

import torch
from torch import nn
from torch.nn import functional as F

from neon_steps.models.base import Adapter, Kappa


def mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(fan_in, fan_out))
        if i < len(sizes) - 2:
            layers.append(nn.SiLU())
    return nn.Sequential(*layers)


def cosine_alpha_bar(timesteps: int, s: float = 0.008) -> torch.Tensor:
    """ᾱ_t of Nichol & Dhariwal's cosine schedule, t = 0..T-1, betas clipped at 0.999."""
    t = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    betas = (1 - f[1:] / f[:-1]).clamp(max=0.999)
    return torch.cumprod(1 - betas, 0).float()


class EpsilonMLP(nn.Module):
    def __init__(self, dim: int, hidden: int, layers: int, timesteps: int, time_dim: int = 16):
        super().__init__()
        self.time_dim = time_dim
        self.mlp = mlp([dim + time_dim] + [hidden] * layers + [dim])
        # The noise schedule is a buffer: saved with the weights, never trained, never merged.
        self.register_buffer("alpha_bar", cosine_alpha_bar(timesteps))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        half = self.time_dim // 2
        freqs = torch.exp(-math.log(1000.0) * torch.arange(half, device=x.device) / half)
        angles = t.float()[:, None] * freqs[None]
        return self.mlp(torch.cat([x, angles.sin(), angles.cos()], dim=1))


class ToyDiffusion(Adapter):
    """DDPM on 2-D points. Kappa: steps (DDIM steps), zeta (score scale), eta (0: DDIM, 1: DDPM)."""

    family = "diffusion"

    def build(self, arch: Mapping[str, Any]) -> nn.Module:
        self.timesteps = int(arch.get("timesteps", 1000))
        return EpsilonMLP(int(arch.get("dim", 2)), int(arch.get("hidden", 32)),
                          int(arch.get("layers", 4)), self.timesteps)

    def loss(self, batch, generator, labels=None):
        x0 = batch.to(self.device)
        t = torch.randint(0, self.timesteps, (len(x0),), generator=generator).to(self.device)
        noise = torch.randn(x0.shape, generator=generator).to(self.device)
        a = self.net.alpha_bar[t][:, None]
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        return F.mse_loss(self.net(xt, t), noise)

    @torch.no_grad()
    def sample(self, n, generator, kappa: Kappa, labels=None):
        steps, zeta, eta = int(kappa.get("steps", 20)), float(kappa.get("zeta", 1.0)), float(kappa.get("eta", 0.0))
        alpha_bar = self.net.alpha_bar
        # "Leading" spacing (as diffusers' DDIM): start at T - T/steps, not at T-1, where the
        # cosine schedule's ᾱ ≈ 1e-9 would amplify ε errors a thousandfold in the x̂0 estimate.
        ts = list(range(0, self.timesteps, self.timesteps // steps))[::-1]
        x = torch.randn((n, self.net.mlp[-1].out_features), generator=generator).to(self.device)
        for i, t in enumerate(ts):
            a = alpha_bar[t]
            a_prev = alpha_bar[ts[i + 1]] if i + 1 < steps else torch.ones((), device=self.device)
            # Scaling the score s = -ε/√(1-ᾱ) by ζ is scaling the predicted noise by ζ.
            eps = zeta * self.net(x, torch.full((n,), t, device=self.device))
            x0 = (x - (1 - a).sqrt() * eps) / a.sqrt()
            sigma = eta * ((1 - a_prev) / (1 - a) * (1 - a / a_prev)).clamp(min=0).sqrt()
            x = a_prev.sqrt() * x0 + (1 - a_prev - sigma**2).clamp(min=0).sqrt() * eps
            if eta > 0 and i + 1 < steps:
                x = x + sigma * torch.randn(x.shape, generator=generator).to(self.device)
        return x.cpu()

    def nfe(self, kappa):
        return int(kappa.get("steps", 20))


class BinnedAR(nn.Module):
    """One MLP for both positions: input (x1 / scale, 0) gives p(x2 | x1), a start token (0, 1)
    gives p(x1)."""

    def __init__(self, bins: int, low: float, high: float, hidden: int, layers: int):
        super().__init__()
        self.logits = mlp([2] + [hidden] * layers + [bins])
        self.register_buffer("centers", torch.linspace(low, high, 2 * bins + 1)[1::2])
        self.width = (high - low) / bins
        self.scale = max(abs(low), abs(high))

    def bin_of(self, x: torch.Tensor) -> torch.Tensor:
        edges = self.centers[:-1] + self.width / 2
        return torch.bucketize(x.contiguous(), edges)

    def first_logits(self, n: int) -> torch.Tensor:
        start = torch.tensor([[0.0, 1.0]], device=self.centers.device)
        return self.logits(start).expand(n, -1)

    def conditional_logits(self, bin1: torch.Tensor) -> torch.Tensor:
        x1 = self.centers[bin1][:, None] / self.scale
        return self.logits(torch.cat([x1, torch.zeros_like(x1)], dim=1))


class ToyAutoregressive(Adapter):
    """p(x1)·p(x2|x1) over binned coordinates. Kappa: tau (temperature).

    The bins cover [low, high] only: with [-3, 3] on the toy's target (σ ≈ 1.4) the tails are
    clipped, so the base at τ = 1 is slightly mode-seeking (covariance ≈ 0.93 of the truth), as a
    tokenizer's finite range makes a real AR model. That is what makes Neon's sign predictable
    here: a base fitted without such a bias is as often too wide as too narrow."""

    family = "autoregressive"

    def build(self, arch):
        return BinnedAR(int(arch.get("bins", 32)), float(arch.get("low", -3.0)), float(arch.get("high", 3.0)),
                        int(arch.get("hidden", 64)), int(arch.get("layers", 2)))

    def loss(self, batch, generator, labels=None):
        bins = self.net.bin_of(batch.to(self.device))
        first = F.cross_entropy(self.net.first_logits(len(bins)), bins[:, 0])
        return first + F.cross_entropy(self.net.conditional_logits(bins[:, 0]), bins[:, 1])

    @torch.no_grad()
    def sample(self, n, generator, kappa, labels=None):
        tau = float(kappa.get("tau", 1.0))
        net = self.net
        probs1 = torch.softmax(net.first_logits(1)[0] / tau, dim=0).cpu()
        bin1 = torch.multinomial(probs1, n, replacement=True, generator=generator)
        probs2 = torch.softmax(net.conditional_logits(bin1.to(self.device)) / tau, dim=1).cpu()
        bin2 = torch.multinomial(probs2, 1, generator=generator)[:, 0]
        # A point is its bin's centre plus uniform jitter: the model is a piecewise-constant density.
        jitter = torch.rand((n, 2), generator=generator) - 0.5
        return net.centers.cpu()[torch.stack([bin1, bin2], 1)] + jitter * net.width

    def nfe(self, kappa):
        return 2
