"""A class-conditional diffusion model of 8x8 digits: diffusers' UNet2DModel (the class enters
through its class embedding, `num_class_embeds` = classes + 1 null class for classifier-free
guidance) trained with the ε-prediction loss, sampled with a diffusers scheduler.

Its arch and kappa knobs: neon_steps/models/knobs.py, DIGITS_DIFFUSION.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn
from torch.nn import functional as F

from neon_steps.models import images, knobs
from neon_steps.models.base import Adapter, Kappa

class DigitsDiffusion(Adapter):
    family = "diffusion"
    arch_knobs, kappa_knobs = knobs.DIGITS_DIFFUSION

    def build(self, arch: Mapping[str, Any]) -> nn.Module:
        from diffusers import UNet2DModel

        self.num_classes, self.p_uncond = arch["num_classes"], arch["p_uncond"]
        self.timesteps, self.beta_schedule = arch["timesteps"], arch["beta_schedule"]
        channels = tuple(arch["channels"])
        down = ["DownBlock2D"] * len(channels)
        up = ["UpBlock2D"] * len(channels)
        if arch["attention"]:
            down[-1], up[0] = "AttnDownBlock2D", "AttnUpBlock2D"
        self.noise_schedule = self.scheduler()  # the forward process, for the loss
        return UNet2DModel(
            sample_size=arch["size"], in_channels=arch["in_channels"], out_channels=arch["in_channels"],
            block_out_channels=channels, layers_per_block=arch["layers_per_block"], down_block_types=tuple(down),
            up_block_types=tuple(up), norm_num_groups=arch["norm_groups"], add_attention=arch["attention"],
            attention_head_dim=arch["attention_head_dim"], num_class_embeds=self.num_classes + 1,
        )

    def scheduler(self, kind: str = "ddpm", spacing: str = "trailing"):
        from diffusers import DDIMScheduler, DDPMScheduler

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
        kappa = self.settings(kappa)
        sched = self.scheduler(kappa["sampler"], kappa["spacing"])
        sched.set_timesteps(kappa["steps"])
        gamma = images.sampling_scale(kappa, labels)
        y = images.conditioning(n, labels, self.num_classes, self.device)
        shape = (n, self.net.config.in_channels, self.net.config.sample_size, self.net.config.sample_size)
        x = torch.randn(shape, generator=generator).to(self.device)
        extra = {"eta": kappa["eta"]} if kappa["sampler"] == "ddim" else {}
        for t in sched.timesteps:
            tt = torch.full((n,), int(t), device=self.device)
            eps = images.guided(lambda xs, ys: self.eps(xs, tt.repeat(len(xs) // n), ys), x, y,
                                self.num_classes, gamma)
            x = sched.step(eps, t, x, generator=generator, **extra).prev_sample
        return images.to_uint8(x).cpu()

    def nfe(self, kappa):
        kappa = self.settings(kappa)
        return kappa["steps"] * images.evaluations_per_step(kappa)
