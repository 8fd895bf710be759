"""What the image adapters share: the uint8 <-> network range conversions, label dropout for
classifier-free guidance (a null class), and the guidance mix itself.

Samples leave every image adapter as uint8 images [N,C,H,W]; data (real or synthetic) enters its
loss in the same form. Classifier-free guidance with scale γ ("cfg" in kappa):
    out = out_uncond + γ·(out_cond − out_uncond)
so γ = 1 is the plain conditional model (one network evaluation per step), γ = 0 the
unconditional one, γ > 1 guided (two evaluations per step, batched as one forward pass).
"""
from __future__ import annotations

from typing import Callable

import torch

from neon_steps.models.base import Kappa


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 0..255 -> float in [-1, 1]."""
    return images.float() / 127.5 - 1


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """float in [-1, 1] (clipped) -> uint8 0..255."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def drop_labels(labels: torch.Tensor, p: float, null: int, generator: torch.Generator) -> torch.Tensor:
    """Replace each label by the null class with probability p (for classifier-free guidance)."""
    drop = torch.rand(labels.shape, generator=generator).to(labels.device) < p
    return torch.where(drop, torch.full_like(labels, null), labels)


def cfg_scale(kappa: Kappa) -> float:
    """γ of `kappa` ("cfg", default 1)."""
    return float(kappa.get("cfg", 1.0))


def sampling_scale(kappa: Kappa, labels: torch.Tensor | None) -> float:
    """The γ a draw uses: sampling without labels draws from the unconditional (null-class)
    model, where guidance has nothing to mix, so γ is 1 there (the workflow always gives
    conditional models labels)."""
    return 1.0 if labels is None else cfg_scale(kappa)


def evaluations_per_step(kappa: Kappa) -> int:
    """Network evaluations per sample per solver step: 2 under guidance (cond + uncond)."""
    return 1 if cfg_scale(kappa) == 1.0 else 2


def guided(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x: torch.Tensor,
           labels: torch.Tensor, null: int, gamma: float) -> torch.Tensor:
    """fn(x, labels) under classifier-free guidance γ; one batched call of twice the size when
    γ ≠ 1 (the conditional half first)."""
    if gamma == 1.0:
        return fn(x, labels)
    both = fn(torch.cat([x, x]), torch.cat([labels, torch.full_like(labels, null)]))
    cond, uncond = both.chunk(2)
    return uncond + gamma * (cond - uncond)


def conditioning(n: int, labels: torch.Tensor | None, num_classes: int, device) -> torch.Tensor:
    """The labels of a batch of n samples; a conditional model sampled without labels draws from
    the unconditional (null-class) model."""
    if labels is None:
        return torch.full((n,), num_classes, dtype=torch.long, device=device)
    if len(labels) != n:
        raise ValueError(f"sample: {len(labels)} labels for {n} samples")
    return labels.to(device=device, dtype=torch.long)
