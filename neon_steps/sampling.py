"""Sampling in shards of seeds: shard i of a draw always holds the same samples, whichever job
(or how many jobs) produced it, so draws can be extended and resumed."""
from __future__ import annotations

import math
import shutil
import sys
from pathlib import Path
from typing import Iterator

import torch
from tqdm import tqdm

from neon_steps.io import load_tensors, save_tensors, write_text
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
         labels: torch.Tensor | None = None, desc: str = "sampling", **store) -> torch.Tensor:
    """`n` samples in one tensor: `draw_shards` concatenated, for draws that fit in memory."""
    return torch.cat(list(draw_shards(adapter, n, seed, kappa, shard_size, labels, desc, **store)))


def draw_shards(adapter: Adapter, n: int, seed: int, kappa: Kappa, shard_size: int = 1000,
                labels: torch.Tensor | None = None, desc: str = "sampling",
                resume_dir: str | Path | None = None, fingerprint: str = "",
                first_shard: int = 0) -> Iterator[torch.Tensor]:
    """`n` samples, one shard at a time (memory: one shard, whatever `n`); shard i is drawn from
    its own generator seeded by (seed, first_shard + i).

    With `resume_dir`, each finished shard is kept there (under `fingerprint`, which must name the
    weights and settings), so a killed job started again draws only the missing shards.
    `first_shard`: the draw continues one whose shards 0..first_shard-1 are drawn elsewhere (another
    job's part of S, or the search's samples before a final evaluation); `labels` are then those of
    this draw's samples only."""
    adapter.net.eval()
    store = ShardStore(resume_dir, fingerprint) if resume_dir else None
    if store and (kept := store.count()):
        print(f"{desc}: {kept} shards already drawn in {store.folder}, drawing the rest", file=sys.stderr)
    for i, part in tqdm(list(shards(n, shard_size)), desc=desc, unit="shard", mininterval=5):
        count = part.stop - part.start
        shard = store.get(i, count) if store else None
        if shard is None:
            shard_labels = None if labels is None else labels[part]
            gen = torch.Generator().manual_seed(derive_seed(seed, "shard", first_shard + i))
            shard = adapter.sample(count, gen, kappa, shard_labels)
            if store:
                store.put(i, shard)
        yield shard


class ShardStore:
    """Finished shards of one draw, one atomic file each; a different fingerprint empties it."""

    def __init__(self, folder: str | Path, fingerprint: str):
        self.folder = Path(folder)
        stamp = self.folder / "fingerprint"
        if self.folder.exists() and (not stamp.exists() or stamp.read_text() != fingerprint):
            shutil.rmtree(self.folder)
        if not self.folder.exists():
            self.folder.mkdir(parents=True)
            write_text(stamp, fingerprint)

    def count(self) -> int:
        return len(list(self.folder.glob("shard*.safetensors")))

    def path(self, index: int) -> Path:
        return self.folder / f"shard{index:06d}.safetensors"

    def get(self, index: int, count: int) -> torch.Tensor | None:
        path = self.path(index)
        if not path.exists():
            return None
        shard = load_tensors(path)["samples"]
        return shard if len(shard) == count else None

    def put(self, index: int, shard: torch.Tensor) -> None:
        save_tensors(self.path(index), {"samples": shard})
