"""A class-conditional flow-matching model of 8x8 digits: torchcfm's UNetModelWrapper trained with
torchcfm's ConditionalFlowMatcher (straight paths from noise at t=0 to data at t=1), sampled by
integrating the learned velocity with torchdiffeq.

Its arch and kappa knobs: neon_steps/models/knobs.py, DIGITS_FLOW. dopri5's tolerances default
to 1e-3 (torchdiffeq's own, 1e-7/1e-9, would be a thousand steps).

NFE: dopri5 is adaptive, so the number of velocity evaluations is counted while sampling: each
call of `sample` records how many evaluations it made (×2 under guidance, whose conditional and
unconditional halves share one batched call), and `nfe(kappa)` reports the mean over the batches
drawn so far with those settings — the fid stage calls it after its draw, so the tables get the
count of the very samples they score. If nothing was drawn (all shards resumed from disk), it
draws a 64-sample probe batch to count.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn
from torch.nn import functional as F

from neon_steps.models import images, knobs
from neon_steps.models.base import Adapter, Kappa

def _kappa_key(kappa: Kappa) -> str:
    return repr(sorted((k, str(v)) for k, v in kappa.items()))


class DigitsFlow(Adapter):
    family = "flow"
    arch_knobs, kappa_knobs = knobs.DIGITS_FLOW

    def build(self, arch: Mapping[str, Any]) -> nn.Module:
        from torchcfm.conditional_flow_matching import ConditionalFlowMatcher
        from torchcfm.models.unet.unet import UNetModelWrapper

        self.num_classes, self.p_uncond = arch["num_classes"], arch["p_uncond"]
        size = arch["size"]
        self.shape = (arch["in_channels"], size, size)
        self.matcher = ConditionalFlowMatcher(sigma=arch["sigma"])
        self._counts: dict[str, list[int]] = {}  # kappa -> [evaluations·samples, samples]
        return UNetModelWrapper(
            dim=self.shape, num_channels=arch["channels"], num_res_blocks=arch["res_blocks"],
            channel_mult=tuple(arch["channel_mult"]),
            # attention at 4x4 (downsampling factor 2), or at a resolution that never occurs
            attention_resolutions=str(size // 2 if arch["attention"] else 2 * size),
            class_cond=True, num_classes=self.num_classes + 1, dropout=arch["dropout"],
            # The time and class embedding as a scale and shift after each GroupNorm: added before
            # it (torchcfm's default), GroupNorm(32) over 32 channels (one channel a group)
            # subtracts it again, and the net ignores t and the class at that width.
            use_scale_shift_norm=arch["scale_shift"],
        )

    def velocity(self, t: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The network's velocity at time t (the null class, `num_classes`, is unconditional)."""
        return self.net(t, x, y=y)

    def loss(self, batch, generator, labels=None):
        x1 = images.to_unit(batch.to(self.device))
        n = len(x1)
        x0 = torch.randn(x1.shape, generator=generator).to(self.device)
        t = torch.rand((n,), generator=generator).to(self.device)
        y = images.conditioning(n, labels, self.num_classes, self.device)
        y = images.drop_labels(y, self.p_uncond, self.num_classes, generator)
        # The matcher's path noise (σ·ε) comes from the global RNG: with σ = 0 (the default) it
        # is multiplied by zero, so every random number of the loss is the generator's.
        t, xt, ut = self.matcher.sample_location_and_conditional_flow(x0, x1, t=t)
        return F.mse_loss(self.velocity(t, xt, y), ut)

    @torch.no_grad()
    def sample(self, n, generator, kappa: Kappa, labels=None):
        from torchdiffeq import odeint

        kappa = self.settings(kappa)
        gamma = images.sampling_scale(kappa, labels)
        y = images.conditioning(n, labels, self.num_classes, self.device)
        calls = 0

        def velocity(t, x):
            nonlocal calls
            calls += 1
            return images.guided(lambda xs, ys: self.velocity(t.expand(len(xs)), xs, ys), x, y, self.num_classes, gamma)

        x0 = torch.randn((n, *self.shape), generator=generator).to(self.device)
        span = torch.tensor([0.0, 1.0], device=self.device)
        if kappa["solver"] == "dopri5":
            path = odeint(velocity, x0, span, method="dopri5", rtol=kappa["rtol"], atol=kappa["atol"])
        else:
            path = odeint(velocity, x0, span, method="euler", options={"step_size": 1.0 / kappa["steps"]})
        count = self._counts.setdefault(_kappa_key(kappa), [0, 0])
        count[0] += calls * (1 if gamma == 1.0 else 2) * n
        count[1] += n
        return images.to_uint8(path[-1]).cpu()

    def nfe(self, kappa):
        kappa = self.settings(kappa)
        if kappa["solver"] == "euler":
            return kappa["steps"] * images.evaluations_per_step(kappa)
        key = _kappa_key(kappa)
        if key not in self._counts:  # nothing drawn with these settings yet: count a probe batch
            probe = torch.Generator().manual_seed(0)
            labels = torch.arange(64) % self.num_classes if self.conditional else None
            self.sample(64, probe, kappa, labels)
        total, samples = self._counts[key]
        return round(total / samples)
