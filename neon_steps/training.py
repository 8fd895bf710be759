"""The training loop shared by base training and Neon's fine-tuning.

Every step's data and noise come from generators seeded by (seed, step), and the learning rate is
a function of images seen, so training to B in one go or in segments gives the same bits.

A step's batch is split into chunks of `micro_batch` images, each chunk's noise seeded by
(seed, step, chunk), whose gradients add up to the batch's (gradient accumulation). The ranks of
a process group (neon_steps.distributed) share the chunks of every step and add up their
gradients before the optimizer steps, so G processes train as one does, to float rounding.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, NamedTuple

import torch
import torch.distributed as dist
from tqdm import tqdm

from neon_steps import distributed
from neon_steps.io import load_metadata, load_tensors, save_tensors
from neon_steps.models import Adapter
from neon_steps.seeding import generator
from neon_steps.synthetic import InMemory, Rows


@dataclass(frozen=True)
class Recipe:
    lr: float
    batch_size: int
    seed: int = 0
    warmup_images: int = 0            # linear warm-up to lr over this many images
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    micro_batch: int | None = None    # images per forward/backward (None: the whole batch)

    @property
    def chunk_size(self) -> int:
        return self.micro_batch or self.batch_size

    def metadata(self) -> dict[str, Any]:
        """The recipe as a state file records it; without micro_batch where it has none, so that
        a state is the same file as before there was one."""
        return {k: v for k, v in asdict(self).items() if not (k == "micro_batch" and v is None)}

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> "Recipe":
        fields = {k: cfg[k] for k in cls.__dataclass_fields__ if k in cfg}
        if "betas" in fields:
            fields["betas"] = tuple(fields["betas"])
        return cls(**fields)

    def lr_at(self, images_seen: int) -> float:
        if self.warmup_images <= 0:
            return self.lr
        return self.lr * min(1.0, (images_seen + self.batch_size) / self.warmup_images)


def steps_for(images: float, batch_size: int) -> int:
    return math.ceil(round(images) / batch_size)


def batch_indices(step: int, n: int, batch_size: int, seed: int) -> torch.Tensor:
    """Rows of step `step` in an endless stream of per-epoch permutations of n rows."""
    if batch_size >= n:
        return torch.arange(n)
    start, stop = step * batch_size, (step + 1) * batch_size
    rows = []
    for epoch in range(start // n, (stop - 1) // n + 1):
        perm = torch.randperm(n, generator=generator(seed, "epoch", epoch))
        lo, hi = max(start - epoch * n, 0), min(stop - epoch * n, n)
        rows.append(perm[lo:hi])
    return torch.cat(rows)


class Chunk(NamedTuple):
    """Part of a step's batch: its samples (and labels), and its share of the batch's loss."""
    index: int
    samples: torch.Tensor
    labels: torch.Tensor | None
    weight: float


def chunk_generator(seed: int, step: int, chunk: int) -> torch.Generator:
    """The noise of one chunk of a step's batch; chunk 0's is that of a whole batch (no
    micro_batch), so a recipe without micro_batch trains as it did before chunks."""
    return generator(seed, "step", step) if chunk == 0 else generator(seed, "step", step, "chunk", chunk)


class _StepBatches(torch.utils.data.Dataset):
    """Item k: this rank's chunks of step `first + k` (chunks rank, rank + ranks, ...), so a
    DataLoader's workers read steps ahead in order, and a rank reads only its own rows."""

    def __init__(self, rows: Rows, first: int, until: int, recipe: Recipe, rank: int = 0, ranks: int = 1):
        self.rows, self.first, self.until, self.recipe, self.rank, self.ranks = rows, first, until, recipe, rank, ranks

    def __len__(self) -> int:
        return max(0, self.until - self.first)

    def __getitem__(self, k: int) -> list[Chunk]:
        batch = batch_indices(self.first + k, len(self.rows), self.recipe.batch_size, self.recipe.seed)
        chunks = batch.split(self.recipe.chunk_size)
        mine = list(range(self.rank, len(chunks), self.ranks))
        if not mine:
            return []
        sizes = [len(chunks[c]) for c in mine]
        samples, labels = self.rows.take(torch.cat([chunks[c] for c in mine]))  # one read for all of them
        labels = [None] * len(mine) if labels is None else labels.split(sizes)
        return [Chunk(c, s, y, n / len(batch)) for c, s, y, n in zip(mine, samples.split(sizes), labels, sizes)]


def step_batches(rows: Rows, first: int, until: int, recipe: Recipe, rank: int = 0, ranks: int = 1,
                 workers: int = 0) -> Iterator[list[Chunk]]:
    """This rank's chunks of steps first..until-1: a function of (seed, step) alone."""
    steps = _StepBatches(rows, first, until, recipe, rank, ranks)
    if workers <= 0:
        return (steps[k] for k in range(len(steps)))
    loader = torch.utils.data.DataLoader(steps, batch_size=None, shuffle=False, num_workers=workers,
                                         prefetch_factor=4, persistent_workers=False)
    return iter(loader)


class Trainer:
    """Adam on an adapter's loss; `state` is everything needed to continue bit for bit."""

    def __init__(self, adapter: Adapter, recipe: Recipe):
        self.adapter, self.recipe = adapter, recipe
        self.params = [p for p in adapter.net.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(self.params, lr=recipe.lr, betas=recipe.betas,
                                          weight_decay=recipe.weight_decay)
        self.step = 0

    @property
    def images_seen(self) -> int:
        return self.step * self.recipe.batch_size

    def train(self, data: torch.Tensor | Rows, labels: torch.Tensor | None, until_step: int,
              desc: str = "training", after_step: Callable[["Trainer"], None] | None = None,
              loader_workers: int = 0) -> list[float]:
        """Train to `until_step`; `data` is a tensor (with `labels`) or rows read on demand (S on
        disk), whose batches `loader_workers` processes read ahead. In a process group, every rank
        calls this alike and each trains on its share of every batch."""
        net, recipe, device = self.adapter.net, self.recipe, self.adapter.device
        rows = data if isinstance(data, Rows) else InMemory(data, labels)
        net.train()
        losses = []
        ranks = distributed.world_size()
        batches = step_batches(rows, self.step, until_step, recipe, distributed.rank(), ranks, loader_workers)
        for chunks in tqdm(batches, desc=desc, unit="step", mininterval=5, total=max(0, until_step - self.step),
                           disable=not distributed.is_main()):
            for group in self.optimizer.param_groups:
                group["lr"] = recipe.lr_at(self.images_seen)
            self.optimizer.zero_grad(set_to_none=True)
            # Each chunk's loss (an adapter's loss is a mean over its batch) weighted by the chunk's
            # share of the batch: the chunks' gradients add up to the whole batch's.
            loss = torch.zeros((), device=device)
            for chunk in chunks:
                chunk_loss = self.adapter.loss(chunk.samples.to(device),
                                               chunk_generator(recipe.seed, self.step, chunk.index),
                                               None if chunk.labels is None else chunk.labels.to(device))
                (chunk_loss * chunk.weight).backward()
                loss = loss + chunk_loss.detach() * chunk.weight
            if ranks > 1:
                loss = sum_over_ranks(self.params, loss)
            self.optimizer.step()
            losses.append(loss.item())
            self.step += 1
            if after_step is not None:
                after_step(self)
        return losses

    # -- resumable state: weights + optimizer moments + step, one safetensors file -------------
    def save_state(self, path, metadata: Mapping[str, Any] | None = None) -> None:
        tensors = {f"net.{k}": v for k, v in self.adapter.state_dict().items()}
        optim = self.optimizer.state_dict()
        for index, slots in optim["state"].items():
            for key, value in slots.items():
                tensors[f"optim.{index}.{key}"] = torch.as_tensor(value)
        meta = {"step": self.step, "images_seen": self.images_seen, "recipe": self.recipe.metadata(),
                "param_groups": optim["param_groups"], **(metadata or {})}
        save_tensors(path, tensors, meta)

    def load_state(self, path) -> None:
        tensors, meta = load_tensors(path), load_metadata(path)
        self.adapter.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net.")})
        state: dict[int, dict[str, torch.Tensor]] = {}
        for name, value in tensors.items():
            if name.startswith("optim."):
                _, index, key = name.split(".", 2)
                state.setdefault(int(index), {})[key] = value
        self.optimizer.load_state_dict({"state": state, "param_groups": json.loads(meta["param_groups"])})
        self.step = int(meta["step"])


def sum_over_ranks(params: list[torch.nn.Parameter], loss: torch.Tensor) -> torch.Tensor:
    """Every rank's gradients (and loss) added up, in one all-reduce of one flat buffer (the
    chunks' weights already make the sum the batch's gradient). A parameter that has a gradient
    on no rank keeps none, as on one process (Adam then leaves it alone); the summed loss."""
    grads = [p.grad for p in params]
    has_grad = torch.tensor([g is not None for g in grads], dtype=loss.dtype, device=loss.device)
    flat = torch.cat([loss.reshape(1), has_grad] +
                     [(torch.zeros_like(p) if g is None else g).reshape(-1) for p, g in zip(params, grads)])
    dist.all_reduce(flat)
    summed = flat[1 + len(params):].split([p.numel() for p in params])
    for p, had, grad in zip(params, flat[1:1 + len(params)].tolist(), summed):
        p.grad = grad.view_as(p).to(p.dtype) if had else None
    return flat[0]


def weights_from_state(path) -> dict[str, torch.Tensor]:
    return {k[4:]: v for k, v in load_tensors(path).items() if k.startswith("net.")}


def is_state(path) -> bool:
    """A resumable training state (as opposed to bare weights)."""
    return "param_groups" in load_metadata(path)


class ResumePoint:
    """A training state saved beside a job's output every so often, so that a killed job (time
    limit, preemption, Ctrl-C) started again loses at most one interval. It belongs to one set of
    inputs and settings (its fingerprint); a stale one is discarded, never resumed from."""

    def __init__(self, path, fingerprint: str, every_images: int | None = None,
                 every_minutes: float | None = None):
        self.path, self.fingerprint = Path(path), fingerprint
        self.every_images, self.every_seconds = every_images, (every_minutes or 0) * 60 or None
        self._saved_images, self._saved_time = 0, time.monotonic()

    def restore(self, trainer: Trainer) -> bool:
        if not self.path.exists():
            return False
        if load_metadata(self.path).get("fingerprint") != self.fingerprint:
            self.path.unlink()
            return False
        trainer.load_state(self.path)
        self._saved_images = trainer.images_seen
        return True

    def __call__(self, trainer: Trainer) -> None:
        due_images = self.every_images and trainer.images_seen - self._saved_images >= self.every_images
        due_time = self.every_seconds and time.monotonic() - self._saved_time >= self.every_seconds
        if due_images or due_time:
            trainer.save_state(self.path, {"fingerprint": self.fingerprint})
            self._saved_images, self._saved_time = trainer.images_seen, time.monotonic()

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)
