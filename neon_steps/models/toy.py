"""The paper's 2-D toy models (Appendix B.11): a DDPM with an MLP ε-predictor whose sampler
scales the score by ζ, and an autoregressive model p(x1)·p(x2|x1) over binned coordinates
sampled with temperature τ."""
from __future__ import annotations

import math
from typing import Any, Mapping

import torch
from torch import nn
from torch.nn import functional as F

from neon_steps.errors import ConfigError
from neon_steps.models import knobs
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
    """ε(x, t) for t = 0..T-1. `time_input`: how t reaches the MLP. "sinusoidal": 8 sin/cos pairs
    of t at frequencies 1 to 1/1000 per step; "scaled": the one number t/(T-1), as in the authors'
    toy notebook, which makes ε a smooth function of the noise level (what the stretched-time
    sampler relies on)."""

    def __init__(self, dim: int, hidden: int, layers: int, timesteps: int, time_dim: int = 16,
                 time_input: str = "sinusoidal"):
        super().__init__()
        if time_input not in TIME_INPUTS:
            raise ConfigError(f"arch.time_input: {time_input!r} is not one of {', '.join(TIME_INPUTS)}")
        self.time_input, self.timesteps = time_input, timesteps
        self.time_dim = time_dim if time_input == "sinusoidal" else 1
        self.mlp = mlp([dim + self.time_dim] + [hidden] * layers + [dim])
        # The noise schedule is a buffer: saved with the weights, never trained, never merged.
        self.register_buffer("alpha_bar", cosine_alpha_bar(timesteps))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.time_input == "scaled":
            return self.mlp(torch.cat([x, (t.float() / (self.timesteps - 1))[:, None]], dim=1))
        half = self.time_dim // 2
        freqs = torch.exp(-math.log(1000.0) * torch.arange(half, device=x.device) / half)
        angles = t.float()[:, None] * freqs[None]
        return self.mlp(torch.cat([x, angles.sin(), angles.cos()], dim=1))


TIME_INPUTS = ("sinusoidal", "scaled")


class ToyDiffusion(Adapter):
    """DDPM on 2-D points. Arch: hidden, layers, timesteps, time_input (see EpsilonMLP).

    Kappa: steps (sampling steps K), zeta (score scale ζ), sampler:
    - "ddim" (default): textbook DDIM on the training schedule, ζ scales the predicted noise
      wherever it is used; eta 0 is deterministic, 1 is DDPM's ancestral sampler.
    - "ddim-stretched-time": the authors' toy sampler (their notebook's `sample_diffusion`), see
      `_sample_stretched_time`.
    """

    family = "diffusion"
    arch_knobs, kappa_knobs = knobs.TOY_DIFFUSION

    def build(self, arch: Mapping[str, Any]) -> nn.Module:
        self.timesteps = arch["timesteps"]
        return EpsilonMLP(arch["dim"], arch["hidden"], arch["layers"], self.timesteps, time_input=arch["time_input"])

    def loss(self, batch, generator, labels=None):
        x0 = batch.to(self.device)
        t = torch.randint(0, self.timesteps, (len(x0),), generator=generator).to(self.device)
        noise = torch.randn(x0.shape, generator=generator).to(self.device)
        a = self.net.alpha_bar[t][:, None]
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        return F.mse_loss(self.net(xt, t), noise)

    @torch.no_grad()
    def sample(self, n, generator, kappa: Kappa, labels=None):
        kappa = self.settings(kappa)
        x = torch.randn((n, self.net.mlp[-1].out_features), generator=generator).to(self.device)
        if kappa["sampler"] == "ddim-stretched-time":
            return self._sample_stretched_time(x, kappa["steps"], kappa["zeta"]).cpu()
        return self._sample_ddim(x, kappa["steps"], kappa["zeta"], kappa["eta"], generator).cpu()

    def _sample_ddim(self, x: torch.Tensor, steps: int, zeta: float, eta: float,
                     generator: torch.Generator) -> torch.Tensor:
        n, alpha_bar = len(x), self.net.alpha_bar
        # "Leading" spacing (as diffusers' DDIM): start at T - T/steps, not at T-1, where the
        # cosine schedule's ᾱ ≈ 1e-9 would amplify ε errors a thousandfold in the x̂0 estimate.
        ts = list(range(0, self.timesteps, self.timesteps // steps))[::-1]
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
        return x

    def _sample_stretched_time(self, x: torch.Tensor, steps: int, zeta: float) -> torch.Tensor:
        """The authors' toy sampler, in this schedule's terms. Their notebook rebuilds the cosine
        schedule with K = `steps` points and, at its step k = K-1..0, gives the network the time
        k/(K-1) on the training scale t/(T-1), while the state's noise level is that of k/K. So
        at every step but the last the network is told a noisier time than the truth (by the
        factor (T-1)K/(T(K-1)): 5% for T = 1000, K = 20), predicts more noise than the state holds
        and x̂0 is shrunk toward the mean: a systematic mode-seeking bias of the neutral sampler
        (ζ = 1), of the kind the paper's Appendix B.7 ascribes to finite-step ODE solvers. For an
        exact Gaussian denoiser it takes the samples' variance on this toy's target from 0.87-0.89
        of the truth (20 textbook DDIM steps) to 0.69-0.80. It is systematic only if ε is smooth
        in the time input (`time_input: scaled`, as theirs); with sinusoidal features a shift of up
        to 49 steps mostly changes the network's per-time fitting error.
        Also as theirs: ζ scales the score only inside the x̂0 estimate (the direction term keeps
        the unscaled ε), and the sampler is deterministic (their σ_t formula clamps to 0)."""
        n, T, net = len(x), self.timesteps, self.net
        alpha_bar = net.alpha_bar
        for k in range(steps - 1, -1, -1):
            a = alpha_bar[k * T // steps]  # the state's noise level: DDIM's grid T·k/K, as "ddim"
            a_prev = alpha_bar[(k - 1) * T // steps] if k > 0 else torch.ones((), device=self.device)
            told = torch.full((n,), k * (T - 1) / (steps - 1), device=self.device)  # what the net is told
            eps = net(x, told)
            x0 = (x - (1 - a).sqrt() * zeta * eps) / a.sqrt()
            x = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
        return x

    def nfe(self, kappa):
        return self.settings(kappa)["steps"]


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
    arch_knobs, kappa_knobs = knobs.TOY_AUTOREGRESSIVE

    def build(self, arch):
        return BinnedAR(arch["bins"], arch["low"], arch["high"], arch["hidden"], arch["layers"])

    def loss(self, batch, generator, labels=None):
        bins = self.net.bin_of(batch.to(self.device))
        first = F.cross_entropy(self.net.first_logits(len(bins)), bins[:, 0])
        return first + F.cross_entropy(self.net.conditional_logits(bins[:, 0]), bins[:, 1])

    @torch.no_grad()
    def sample(self, n, generator, kappa, labels=None):
        tau = self.settings(kappa)["tau"]
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
