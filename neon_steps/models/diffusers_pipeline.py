"""diffusers pipelines: a folder as `save_pretrained` writes it (model_index.json, unet/ with a
UNet2DModel, scheduler/ with the scheduler's config), unconditional or class-conditional (the
UNet's `num_class_embeds`). Sampled with the folder's scheduler (or another diffusers scheduler
built from the same config, kappa.scheduler) for kappa.steps steps; fine-tuned with the
objective the scheduler declares (prediction_type: epsilon, v_prediction or sample) under the
forward process of its beta schedule.

EMA: the folder's unet is θ_r — the weights the pipeline samples from (diffusers' training
scripts write their EMA weights there when they keep one). The fine-tune trains a copy of them
and the merge is between the two; the folder itself is read, never written.

arch: null_class (the class index the model was trained with as "no class", for classifier-free
guidance; without it, kappa.cfg must be 1), num_classes (default: num_class_embeds, less the null
class), p_uncond (label dropout when fine-tuning a model with a null class, 0.1).
kappa: steps (50), scheduler (a diffusers scheduler class name; default: the folder's), eta
(DDIM-like schedulers only), cfg (γ).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn
from torch.nn import functional as F

from neon_steps.models import images, knobs
from neon_steps.models.base import Adapter, Kappa
from neon_steps.errors import NeonError

OBJECTIVES = ("epsilon", "v_prediction", "sample")


class DiffusersPipeline(Adapter):
    family = "diffusion"
    arch_knobs, kappa_knobs = knobs.DIFFUSERS

    def build(self, arch: Mapping[str, Any]) -> nn.Module:
        import diffusers
        from diffusers import DDPMScheduler, UNet2DModel

        folder = self.base.get("checkpoint")
        if not folder:
            raise NeonError("base.checkpoint: the diffusers adapter builds its UNet from a pipeline folder; name one")
        try:
            net = UNet2DModel.from_config(UNet2DModel.load_config(Path(folder) / "unet"))
            self.scheduler_config = json.loads((Path(folder) / "scheduler" / "scheduler_config.json").read_text())
        except (OSError, ValueError) as err:
            raise NeonError(f"base.checkpoint: {folder}: not a diffusers pipeline folder with unet/ and scheduler/ "
                            f"({str(err).splitlines()[0][:160]})") from None
        self.scheduler_name = self.scheduler_config.get("_class_name", "DDPMScheduler")
        self.objective = self.scheduler_config.get("prediction_type", "epsilon")
        if self.objective not in OBJECTIVES:
            raise NeonError(f"base.checkpoint: {folder}: scheduler prediction_type {self.objective!r} "
                            f"is not one of {OBJECTIVES}")
        # The forward process of the loss: the same betas and timesteps, whatever the sampler.
        self.forward_process = DDPMScheduler.from_config(self.scheduler_config)
        self._diffusers = diffusers
        self.null_class = arch["null_class"]
        embeds = net.config.num_class_embeds or 0
        classes = arch["num_classes"] if arch["num_classes"] is not None else embeds - (self.null_class is not None)
        self.num_classes = classes if embeds else 0
        self.p_uncond = arch["p_uncond"] if self.null_class is not None else 0.0
        return net

    def load_checkpoint(self, path) -> "DiffusersPipeline":
        """θ_r: unet/'s weights (safetensors as save_pretrained writes them, or a .bin refused
        unless it loads as plain tensors)."""
        from neon_steps.checkpoints import open_checkpoint

        with open_checkpoint(Path(path) / "unet") as ckpt:
            self.load_state_dict({name: ckpt.read(name) for name in ckpt.specs})
        return self

    def scheduler(self, kappa: Kappa):
        name = kappa["scheduler"] or self.scheduler_name
        cls = getattr(self._diffusers, name, None)
        if cls is None or not hasattr(cls, "from_config"):
            raise NeonError(f"kappa.scheduler: {name!r} is not a diffusers scheduler")
        sched = cls.from_config(self.scheduler_config)
        sched.set_timesteps(kappa["steps"])
        return sched

    def predict(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        return self.net(x, t, class_labels=labels if self.conditional else None).sample

    def loss(self, batch, generator, labels=None):
        x0 = images.to_unit(batch.to(self.device))
        n = len(x0)
        steps = self.forward_process.config.num_train_timesteps
        t = torch.randint(0, steps, (n,), generator=generator).to(self.device)
        noise = torch.randn(x0.shape, generator=generator).to(self.device)
        y = None
        if self.conditional:
            y = images.conditioning(n, labels, self.num_classes, self.device)
            if self.null_class is not None:
                y = images.drop_labels(y, self.p_uncond, int(self.null_class), generator)
        xt = self.forward_process.add_noise(x0, noise, t)
        target = {"epsilon": noise, "sample": x0}.get(self.objective)
        if target is None:  # v-prediction: v = √ᾱ·ε − √(1−ᾱ)·x0
            target = self.forward_process.get_velocity(x0, noise, t)
        return F.mse_loss(self.predict(xt, t, y), target)

    @torch.no_grad()
    def sample(self, n, generator, kappa: Kappa, labels=None):
        kappa = self.settings(kappa)
        sched = self.scheduler(kappa)
        gamma = images.sampling_scale(kappa, labels) if self.conditional else 1.0
        if gamma != 1.0 and self.null_class is None:
            raise NeonError("kappa.cfg: this pipeline has no null class for guidance (set arch.null_class, or cfg 1)")
        y = images.conditioning(n, labels, self.num_classes, self.device) if self.conditional else None
        cfg = self.net.config
        x = torch.randn((n, cfg.in_channels, cfg.sample_size, cfg.sample_size), generator=generator).to(self.device)
        x = x * sched.init_noise_sigma
        extra = {"eta": kappa["eta"]} if kappa["eta"] is not None else {}
        for t in sched.timesteps:
            xin = sched.scale_model_input(x, t)
            tt = torch.full((n,), float(t), device=self.device)
            if y is None:
                out = self.predict(xin, tt, None)
            else:
                out = images.guided(lambda xs, ys: self.predict(xs, tt.repeat(len(xs) // n), ys), xin, y,
                                    int(self.null_class or 0), gamma)
            x = sched.step(out, t, x, generator=generator, **extra).prev_sample
        return images.to_uint8(x).cpu()

    def nfe(self, kappa):
        # The scheduler's own count (second-order schedulers evaluate twice a step).
        kappa = self.settings(kappa)
        return len(self.scheduler(kappa).timesteps) * images.evaluations_per_step(kappa)
