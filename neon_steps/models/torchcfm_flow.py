"""torchcfm checkpoints: the flow-matching model of the paper (torchcfm's examples/images/cifar10
train_cifar10.py), a UNetModelWrapper trained with ConditionalFlowMatcher, sampled by integrating
its velocity from noise (t = 0) to data (t = 1) with torchdiffeq: dopri5 (rtol/atol from kappa,
adaptive, NFE counted while sampling) or Euler steps. Training, sampling and NFE counting are
the digits flow model's (digits_flow.py); this adapter adds the checkpoint layout and the UNet
configuration of real models.

Checkpoint: what the script's torch.save writes, {"net_model", "ema_model", "sched", "optim",
"step"}, read with torch.load(weights_only=True); `module.` prefixes (DataParallel) are stripped.
EMA: θ_r is `ema_model` (base.key; the weights the script samples and scores FID from). Neon's
fine-tune trains a copy of those weights without an EMA of its own (a brief fine-tune at a small
learning rate; the paper's script kept --ema_decay=0.9999), and the merge is ema_model against
that copy. `net_model` and the optimizer state are not read.

arch (UNetModelWrapper's arguments) and kappa: neon_steps/models/knobs.py, TORCHCFM. dopri5's
rtol/atol: torchcfm's FID script uses 1e-5.
"""
from __future__ import annotations

from typing import Any, Mapping

from torch import nn

from neon_steps.models import knobs
from neon_steps.models.digits_flow import DigitsFlow


class TorchCFMFlow(DigitsFlow):
    family = "flow"
    checkpoint_key = "ema_model"
    arch_knobs, kappa_knobs = knobs.TORCHCFM

    def build(self, arch: Mapping[str, Any]) -> nn.Module:
        from torchcfm.conditional_flow_matching import ConditionalFlowMatcher
        from torchcfm.models.unet.unet import UNetModelWrapper

        self.num_classes = arch["num_classes"]
        self.p_uncond = arch["p_uncond"] if arch["p_uncond"] is not None else (0.1 if self.num_classes else 0.0)
        self.shape = (arch["in_channels"], arch["size"], arch["size"])
        self.matcher = ConditionalFlowMatcher(sigma=arch["sigma"])
        self._counts: dict[str, list[int]] = {}
        extra = dict(class_cond=True, num_classes=self.num_classes + 1) if self.num_classes else {}
        return UNetModelWrapper(
            dim=self.shape, num_channels=arch["channels"], num_res_blocks=arch["res_blocks"],
            channel_mult=tuple(arch["channel_mult"]), num_heads=arch["num_heads"],
            num_head_channels=arch["num_head_channels"], attention_resolutions=arch["attention_resolutions"],
            dropout=arch["dropout"], use_scale_shift_norm=arch["scale_shift"], **extra,
        )

    def velocity(self, t, x, y):
        # An unconditional UNetModel refuses labels (it asserts y is None).
        return self.net(t, x, y=y if self.conditional else None)
