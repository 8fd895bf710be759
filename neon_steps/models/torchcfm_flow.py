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

arch (UNetModelWrapper's arguments): size (32), in_channels (3), channels (num_channels, 128),
res_blocks (2), channel_mult ([1, 2, 2, 2]), num_heads (4), num_head_channels (64),
attention_resolutions ("16"), dropout (0.1), num_classes (0: unconditional; > 0 adds one more
embedding, the null class of classifier-free guidance), p_uncond (label dropout, 0.1 if
conditional), sigma (the matcher's path width, 0), scale_shift (use_scale_shift_norm, the
wrapper's default unless given).
kappa: solver (dopri5 | euler), rtol/atol (dopri5; torchcfm's FID script uses 1e-5), steps
(euler), cfg (γ, conditional models).
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from neon_steps.models.digits_flow import DigitsFlow


class TorchCFMFlow(DigitsFlow):
    family = "flow"
    checkpoint_key = "ema_model"

    def build(self, arch: Mapping[str, Any]) -> nn.Module:
        from torchcfm.conditional_flow_matching import ConditionalFlowMatcher
        from torchcfm.models.unet.unet import UNetModelWrapper

        self.num_classes = int(arch.get("num_classes", 0))
        self.p_uncond = float(arch.get("p_uncond", 0.1 if self.num_classes else 0.0))
        size, channels = int(arch.get("size", 32)), int(arch.get("in_channels", 3))
        self.shape = (channels, size, size)
        self.matcher = ConditionalFlowMatcher(sigma=float(arch.get("sigma", 0.0)))
        self._counts: dict[str, list[int]] = {}
        extra = {"use_scale_shift_norm": bool(arch["scale_shift"])} if "scale_shift" in arch else {}
        if self.num_classes:
            extra.update(class_cond=True, num_classes=self.num_classes + 1)
        return UNetModelWrapper(
            dim=self.shape, num_channels=int(arch.get("channels", 128)),
            num_res_blocks=int(arch.get("res_blocks", 2)),
            channel_mult=tuple(arch.get("channel_mult", [1, 2, 2, 2])),
            num_heads=int(arch.get("num_heads", 4)), num_head_channels=int(arch.get("num_head_channels", 64)),
            attention_resolutions=str(arch.get("attention_resolutions", "16")),
            dropout=float(arch.get("dropout", 0.1)), **extra,
        )

    def velocity(self, t, x, y):
        # An unconditional UNetModel refuses labels (it asserts y is None).
        return self.net(t, x, y=y if self.conditional else None)
