"""EDM (NVlabs/edm) network pickles: the paper's EDM-VP models on CIFAR-10 and FFHQ-64.

EDM's networks exist only as pickles ({"ema": network, "loss_fn", "augment_pipe", ...}) whose
classes live in EDM's source tree (training.networks, torch_utils, dnnlib). Unpickling runs code,
so the adapter loads one only when the config says so: base.allow_pickle: true and base.source:
a checkout of NVlabs/edm, put on the import path. Nothing else in the workflow reads a pickle:
the base rule saves θ_r as safetensors, and later stages take the network's structure from the
pickle and its weights from the workflow's files.

EMA: θ_r is the pickle's `ema` network (base.key), the one EDM's generate.py samples from and
its fine-tuning (--transfer) starts from. Neon's fine-tune trains a copy of it without an EMA of
its own; the merge is `ema` against that copy.

Sampling: EDM's deterministic/stochastic Heun sampler (generate.py's edm_sampler) — kappa:
steps (18), rho (7), S_churn (0), S_min (0), S_max (inf), S_noise (1), sigma_min/sigma_max (the
network's); NFE = 2·steps − 1. Class-conditional networks (label_dim > 0) get one-hot labels.
Loss: EDM's training/loss.py, arch.loss: vp (VPLoss: beta_d 19.9, beta_min 0.1, epsilon_t
1e-5), ve (VELoss) or edm (EDMLoss), summed over pixels and averaged over the batch, as EDM's
training loop does. EDM's augmentation pipe is not applied to S (augment_labels None).
"""
from __future__ import annotations

import math
import pickle
import sys
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from neon_steps.models import knobs
from neon_steps.models.base import Adapter, Kappa
from neon_steps.errors import NeonError



def load_network(path: str, source: str, key: str) -> nn.Module:
    """The network at `key` of an EDM pickle, with EDM's source tree importable."""
    if source not in sys.path:
        sys.path.insert(0, source)
    try:
        with open(path, "rb") as f:
            data = pickle.load(f)
    except Exception as err:  # unpickling runs the source tree's code: any error means "cannot load"
        raise NeonError(f"base.checkpoint: {path}: cannot load with base.source {source} "
                        f"({type(err).__name__}: {str(err).splitlines()[0][:160]})") from None
    net = data.get(key) if isinstance(data, Mapping) else None
    if not isinstance(net, nn.Module):
        keys = ", ".join(map(str, data)) if isinstance(data, Mapping) else type(data).__name__
        raise NeonError(f"base.key: {path}: no network at {key!r} (has: {keys})")
    return net


class EDM(Adapter):
    family = "diffusion"
    checkpoint_key = "ema"
    arch_knobs, kappa_knobs = knobs.EDM

    def build(self, arch: Mapping[str, Any]) -> nn.Module:
        path, source = self.base.get("checkpoint"), self.base.get("source")
        if not self.base.get("allow_pickle", False):
            raise NeonError("base.allow_pickle: EDM networks are pickles, which run code to load; set "
                            "allow_pickle: true for a file you trust, and source: a checkout of NVlabs/edm")
        if not source:
            raise NeonError("base.source: EDM pickles need EDM's source tree to load; name a checkout of NVlabs/edm")
        if not path:
            raise NeonError("base.checkpoint: name the EDM network pickle")
        if not Path(source).is_dir():
            raise NeonError(f"base.source: {source}: no such folder")
        self.loss_kind = arch["loss"]
        net = load_network(path, source, self.base.get("key", self.checkpoint_key))
        # EDM pickles its EMA frozen (requires_grad False); its --transfer fine-tune trains a copy,
        # and so does Neon's: every parameter is learned (and merged) again.
        net.requires_grad_(True)
        self.num_classes = int(getattr(net, "label_dim", 0))
        self.shape = (int(net.img_channels), int(net.img_resolution), int(net.img_resolution))
        return net

    def load_checkpoint(self, path) -> "EDM":
        return self  # build() unpickled θ_r already, weights included

    def one_hot(self, labels: torch.Tensor | None, n: int) -> torch.Tensor | None:
        if not self.conditional:
            return None
        if labels is None:
            raise NeonError("sample: a class-conditional EDM network needs labels")
        return torch.eye(self.num_classes, device=self.device)[labels.to(self.device).long()]

    # -- EDM's loss (training/loss.py) ------------------------------------------------------------
    def noise_levels(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """σ per sample and the loss weight λ(σ) of arch.loss."""
        if self.loss_kind == "edm":  # EDMLoss: P_mean -1.2, P_std 1.2, sigma_data 0.5
            sigma = (torch.randn((n, 1, 1, 1), generator=generator) * 1.2 - 1.2).exp()
            weight = (sigma**2 + 0.5**2) / (sigma * 0.5) ** 2
        elif self.loss_kind == "ve":  # VELoss: sigma_min 0.02, sigma_max 100
            sigma = 0.02 * (100 / 0.02) ** torch.rand((n, 1, 1, 1), generator=generator)
            weight = 1 / sigma**2
        else:  # VPLoss: beta_d 19.9, beta_min 0.1, epsilon_t 1e-5
            t = 1 + torch.rand((n, 1, 1, 1), generator=generator) * (1e-5 - 1)
            sigma = ((0.5 * 19.9 * t**2 + 0.1 * t).exp() - 1).sqrt()
            weight = 1 / sigma**2
        return sigma.to(self.device), weight.to(self.device)

    def loss(self, batch, generator, labels=None):
        y = batch.to(self.device).float() / 127.5 - 1
        sigma, weight = self.noise_levels(len(y), generator)
        noise = torch.randn(y.shape, generator=generator).to(self.device) * sigma
        denoised = self.net(y + noise, sigma, self.one_hot(labels, len(y)), augment_labels=None)
        # EDM's loop: loss.sum() / batch — a sum over pixels, a mean over the batch
        return (weight * (denoised - y) ** 2).sum() / len(y)

    # -- EDM's sampler (generate.py's edm_sampler) ---------------------------------------------
    @torch.no_grad()
    def sample(self, n, generator, kappa: Kappa, labels=None):
        kappa = self.settings(kappa)
        net, steps, rho, churn = self.net, kappa["steps"], kappa["rho"], kappa["S_churn"]
        s_min, s_max, s_noise = kappa["S_min"], kappa["S_max"], kappa["S_noise"]
        sigma_min = max(kappa["sigma_min"], float(net.sigma_min))
        sigma_max = min(kappa["sigma_max"], float(net.sigma_max))
        round_sigma = getattr(net, "round_sigma", torch.as_tensor)
        class_labels = self.one_hot(labels, n)

        def randn(shape):
            return torch.randn(shape, generator=generator, dtype=torch.float64).to(self.device)

        i = torch.arange(steps, dtype=torch.float64, device=self.device)
        t_steps = (sigma_max ** (1 / rho) + i / (steps - 1) * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
        t_steps = torch.cat([round_sigma(t_steps), torch.zeros_like(t_steps[:1])])
        x_next = randn((n, *self.shape)) * t_steps[0]
        for k, (t_cur, t_next) in enumerate(zip(t_steps[:-1], t_steps[1:])):
            x_cur = x_next
            gamma = min(churn / steps, math.sqrt(2) - 1) if s_min <= t_cur <= s_max else 0
            t_hat = round_sigma(t_cur + gamma * t_cur)
            x_hat = x_cur + (t_hat**2 - t_cur**2).sqrt() * s_noise * randn(x_cur.shape) if gamma > 0 else x_cur
            d_cur = (x_hat - net(x_hat, t_hat, class_labels).to(torch.float64)) / t_hat
            x_next = x_hat + (t_next - t_hat) * d_cur
            if k < steps - 1:  # Heun's second-order correction
                d_prime = (x_next - net(x_next, t_next, class_labels).to(torch.float64)) / t_next
                x_next = x_hat + (t_next - t_hat) * (0.5 * d_cur + 0.5 * d_prime)
        # generate.py's conversion to 8-bit
        return (x_next * 127.5 + 128).clip(0, 255).to(torch.uint8).cpu()

    def nfe(self, kappa):
        return 2 * self.settings(kappa)["steps"] - 1
