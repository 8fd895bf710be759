"""A class-conditional diffusion model of 8x8 digits: diffusers' UNet2DModel (the class enters
through its class embedding, `num_class_embeds` = classes + 1 null class for classifier-free
guidance) trained with the ε-prediction loss, sampled with a diffusers scheduler.

arch: channels (per UNet level, [32, 64]), layers_per_block (1), attention (true: attention at
the lowest resolution), norm_groups (8), timesteps (1000), beta_schedule ("squaredcos_cap_v2"),
num_classes (10), p_uncond (0.1: label dropout for CFG).
kappa: sampler ("ddim" or "ddpm"), steps (20), eta (DDIM's noise, 0), spacing ("trailing"),
cfg (γ, 1).
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn
from torch.nn import functional as F

from neon_steps.models import images
from neon_steps.models.base import Adapter, Kappa

SAMPLERS = ("ddim", "ddpm")


class DigitsDiffusion(Adapter):
    family = "diffusion"

    def build(self, arch: Mapping[str, Any]) -> nn.Module:
        from diffusers import UNet2DModel

        self.num_classes = int(arch.get("num_classes", 10))
        self.p_uncond = float(arch.get("p_uncond", 0.1))
        self.timesteps = int(arch.get("timesteps", 1000))
        self.beta_schedule = str(arch.get("beta_schedule", "squaredcos_cap_v2"))
        channels = tuple(int(c) for c in arch.get("channels", [32, 64]))
        attention = bool(arch.get("attention", False))
        down = ["DownBlock2D"] * len(channels)
        up = ["UpBlock2D"] * len(channels)
        if attention:
            down[-1], up[0] = "AttnDownBlock2D", "AttnUpBlock2D"
        self.noise_schedule = self.scheduler()  # the forward process, for the loss
        return UNet2DModel(
            sample_size=int(arch.get("size", 8)), in_channels=int(arch.get("in_channels", 1)),
            out_channels=int(arch.get("in_channels", 1)), block_out_channels=channels,
            layers_per_block=int(arch.get("layers_per_block", 1)), down_block_types=tuple(down),
            up_block_types=tuple(up), norm_num_groups=int(arch.get("norm_groups", 8)),
            add_attention=attention, attention_head_dim=int(arch.get("attention_head_dim", 8)),
            num_class_embeds=self.num_classes + 1,
        )

    def scheduler(self, kind: str = "ddpm", spacing: str = "trailing"):
        from diffusers import DDIMScheduler, DDPMScheduler

        if kind not in SAMPLERS:
            raise ValueError(f"kappa.sampler: {kind!r} is not one of {SAMPLERS}")
        cls = DDIMScheduler if kind == "ddim" else DDPMScheduler
        return cls(num_train_timesteps=self.timesteps, beta_schedule=self.beta_schedule,
                   clip_sample=True, timestep_spacing=spacing)

    def eps(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.net(x, t, class_labels=labels).sample

    def loss(self, batch, generator, labels=None):
        x0 = images.to_unit(batch.to(self.device))
        n = len(x0)
        t = torch.randint(0, self.timesteps, (n,), generator=generator).to(self.device)
        noise = torch.randn(x0.shape, generator=generator).to(self.device)
        y = images.conditioning(n, labels, self.num_classes, self.device)
        y = images.drop_labels(y, self.p_uncond, self.num_classes, generator)
        xt = self.noise_schedule.add_noise(x0, noise, t)
        return F.mse_loss(self.eps(xt, t, y), noise)

    @torch.no_grad()
    def sample(self, n, generator, kappa: Kappa, labels=None):
        sched = self.scheduler(str(kappa.get("sampler", "ddim")), str(kappa.get("spacing", "trailing")))
        sched.set_timesteps(int(kappa.get("steps", 20)))
        gamma, eta = images.sampling_scale(kappa, labels), float(kappa.get("eta", 0.0))
        y = images.conditioning(n, labels, self.num_classes, self.device)
        shape = (n, self.net.config.in_channels, self.net.config.sample_size, self.net.config.sample_size)
        x = torch.randn(shape, generator=generator).to(self.device)
        extra = {"eta": eta} if str(kappa.get("sampler", "ddim")) == "ddim" else {}
        for t in sched.timesteps:
            tt = torch.full((n,), int(t), device=self.device)
            eps = images.guided(lambda xs, ys: self.eps(xs, tt.repeat(len(xs) // n), ys), x, y,
                                self.num_classes, gamma)
            x = sched.step(eps, t, x, generator=generator, **extra).prev_sample
        return images.to_uint8(x).cpu()

    def nfe(self, kappa):
        return int(kappa.get("steps", 20)) * images.evaluations_per_step(kappa)
