"""Sampling in shards of seeds: shard i of a draw always holds the same samples, whichever job
(or how many jobs) produced it, so draws can be extended and resumed."""
from __future__ import annotations

import math
from typing import Iterator

import torch
from tqdm import tqdm

from neon_steps.models import Adapter, Kappa
from neon_steps.seeding import derive_seed, generator


def balanced_labels(n: int, num_classes: int, seed: int) -> torch.Tensor:
    """Equal counts per class (up to one), shuffled: the paper's label list for S and evaluation."""
    labels = torch.arange(n) % num_classes
    return labels[torch.randperm(n, generator=generator(seed, "labels"))]


def shards(n: int, shard_size: int) -> Iterator[tuple[int, slice]]:
    for i in range(math.ceil(n / shard_size)):
        yield i, slice(i * shard_size, min(n, (i + 1) * shard_size))


def draw(adapter: Adapter, n: int, seed: int, kappa: Kappa, shard_size: int = 1000,
         labels: torch.Tensor | None = None, desc: str = "sampling") -> torch.Tensor:
    """`n` samples; shard i is drawn from its own generator seeded by (seed, i)."""
    adapter.net.eval()
    parts = []
    for i, part in tqdm(list(shards(n, shard_size)), desc=desc, unit="shard", mininterval=5):
        shard_labels = None if labels is None else labels[part]
        gen = torch.Generator().manual_seed(derive_seed(seed, "shard", i))
        parts.append(adapter.sample(part.stop - part.start, gen, kappa, shard_labels))
    return torch.cat(parts)
