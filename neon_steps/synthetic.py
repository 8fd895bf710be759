"""S on disk: the synthetic set as part files, one per sample job, and a manifest that lists them.

Part j holds the samples [j·images_per_job, (j+1)·images_per_job) of S (and their labels), in
whole shards of the draw, so K jobs write the bytes one job writes. Nothing here holds S in memory:
a part is written shard by shard as it is drawn, and the fine-tune reads the rows of each batch
from the parts with positioned reads.
"""
from __future__ import annotations

import abc
import itertools
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

import numpy as np

from neon_steps.errors import NeonError
from neon_steps.io import atomic_path, metadata_strings, read_header, read_json, write_json

if TYPE_CHECKING:  # torch is imported where it is used: gather_synthetic's job reads headers only
    import torch

MANIFEST_VERSION = 1


def images_per_job(settings: Mapping[str, Any], size: int) -> int:
    """Images each sample job draws: `synthetic.images_per_job`, else all of S in one job."""
    return min(size, settings.get("images_per_job") or size)


def part_count(settings: Mapping[str, Any], size: int) -> int:
    return math.ceil(size / images_per_job(settings, size))


def part_range(settings: Mapping[str, Any], size: int, part: int) -> range:
    """The rows of S that part `part` holds."""
    per_job = images_per_job(settings, size)
    return range(part * per_job, min(size, (part + 1) * per_job))


# -- writing ------------------------------------------------------------------------------------

def write_part(path: str | os.PathLike, shards: Iterable[torch.Tensor], count: int, labels: torch.Tensor | None,
               metadata: Mapping[str, Any]) -> None:
    """Write `count` samples arriving shard by shard (and their labels) as one safetensors file,
    atomically; memory is one shard."""
    from neon_steps.checkpoints import SafetensorsWriter, TensorSpec

    stream = iter(shards)
    first = next(stream)
    specs = {"samples": TensorSpec(first.dtype, (count, *first.shape[1:]))}
    if labels is not None:
        specs["labels"] = TensorSpec(labels.dtype, tuple(labels.shape))
    written = 0
    with atomic_path(path) as tmp, SafetensorsWriter(tmp, specs, metadata_strings(metadata)) as writer:
        for shard in itertools.chain([first], stream):
            writer.write(shard.detach().contiguous().cpu())
            written += len(shard)
        if written != count:
            raise NeonError(f"{path}: drew {written} samples, expected {count}")
        if labels is not None:
            writer.write(labels.contiguous())


def write_manifest(path: str | os.PathLike, parts: Iterable[str]) -> None:
    """The manifest of S: its parts in order, each with its rows and identity, checked for one
    sample shape and dtype, so a fine-tune can address any row of S without opening every file."""
    entries, shape, dtype, labelled, first = [], None, None, None, 0
    folder = Path(path).parent
    for part in parts:
        with open(part, "rb") as f:
            header, _ = read_header(f)
        samples = header["samples"]
        entry_shape, has_labels = samples["shape"][1:], "labels" in header
        if shape is None:
            shape, dtype, labelled = entry_shape, samples["dtype"], has_labels
        elif (entry_shape, samples["dtype"], has_labels) != (shape, dtype, labelled):
            raise NeonError(f"{part}: samples of shape {entry_shape} ({samples['dtype']}), "
                            f"but the first part's are {shape} ({dtype}); draw S again")
        stat = os.stat(part)
        entries.append({"file": os.path.relpath(part, folder), "first": first, "count": samples["shape"][0],
                        "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns})
        first += samples["shape"][0]
    write_json(path, {"version": MANIFEST_VERSION, "size": first, "shape": shape, "dtype": dtype,
                      "labels": labelled, "parts": entries})


# -- reading ------------------------------------------------------------------------------------

NUMPY_DTYPES = {"U8": np.uint8, "I64": np.int64, "I32": np.int32, "F32": np.float32, "F64": np.float64,
                "F16": np.float16}


class _Column:
    """One tensor of a part file, read row by row with pread: the pages read are the kernel's page
    cache, not the job's memory (a memory map's touched pages would count in its RSS, growing
    with S over an epoch)."""

    def __init__(self, path: Path, entry: Mapping[str, Any], data_start: int):
        self.path = path
        self.dtype = NUMPY_DTYPES[entry["dtype"]]
        self.row_shape = tuple(entry["shape"][1:])
        self.row_bytes = math.prod(self.row_shape) * np.dtype(self.dtype).itemsize
        self.offset = data_start + entry["data_offsets"][0]
        self._fd, self._pid = None, None

    def fd(self) -> int:
        if self._pid != os.getpid():  # a DataLoader worker opens its own
            self._fd, self._pid = os.open(self.path, os.O_RDONLY), os.getpid()
        return self._fd

    def rows(self, rows: np.ndarray) -> np.ndarray:
        fd, size = self.fd(), self.row_bytes
        out = bytearray(len(rows) * size)
        view = memoryview(out)
        # Consecutive rows are one read: a batch of sorted rows of a small S, or a whole part.
        start = 0
        while start < len(rows):
            stop = start + 1
            while stop < len(rows) and rows[stop] == rows[stop - 1] + 1:
                stop += 1
            length = (stop - start) * size
            got = os.preadv(fd, [view[start * size:start * size + length]], self.offset + int(rows[start]) * size)
            if got != length:
                raise NeonError(f"{self.path}: shorter than its header says; draw S again")
            start = stop
        return np.frombuffer(out, self.dtype).reshape(len(rows), *self.row_shape)


class Rows(abc.ABC):
    """Training data addressed by row: `len` rows, of which `take` returns a batch."""

    @abc.abstractmethod
    def __len__(self) -> int: ...

    @abc.abstractmethod
    def take(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The samples (and labels, or None) of `rows`, in their order."""


class SyntheticSet(Rows):
    """S as the fine-tune sees it: `len(S)` rows, any of which `take` reads from its part."""

    def __init__(self, manifest: str | os.PathLike):
        spec = read_json(manifest)
        folder = Path(manifest).parent
        self.size, self.labelled = int(spec["size"]), bool(spec["labels"])
        self.firsts = np.array([entry["first"] for entry in spec["parts"]], dtype=np.int64)
        self.samples, self.labels = [], []
        for entry in spec["parts"]:
            part = folder / entry["file"]
            try:
                stat = part.stat()
            except OSError:
                raise NeonError(f"{manifest}: its part {part} is missing; draw S again") from None
            if stat.st_size != entry["bytes"]:
                raise NeonError(f"{part}: changed since {manifest} listed it; draw S again")
            with open(part, "rb") as f:
                header, length = read_header(f)
            self.samples.append(_Column(part, header["samples"], 8 + length))
            self.labels.append(_Column(part, header["labels"], 8 + length) if self.labelled else None)

    def __len__(self) -> int:
        return self.size

    def take(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        rows = rows.numpy().astype(np.int64)
        order = np.argsort(rows, kind="stable")  # read each part front to back
        sorted_rows = rows[order]
        which = np.searchsorted(self.firsts, sorted_rows, side="right") - 1
        samples, labels = [], []
        for part in np.unique(which):
            local = sorted_rows[which == part] - self.firsts[part]
            samples.append(self.samples[part].rows(local))
            if self.labelled:
                labels.append(self.labels[part].rows(local))
        inverse = np.empty_like(order)
        inverse[order] = np.arange(len(order))
        import torch

        picked = torch.from_numpy(np.concatenate(samples)[inverse])
        return picked, torch.from_numpy(np.concatenate(labels)[inverse]) if self.labelled else None

    def all(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Every row in memory: for tests and small sets only."""
        import torch

        return self.take(torch.arange(self.size))


class InMemory(Rows):
    """Rows held in memory (a base's real data), with SyntheticSet's interface."""

    def __init__(self, samples: torch.Tensor, labels: torch.Tensor | None = None):
        self.samples, self.labels = samples, labels

    def __len__(self) -> int:
        return len(self.samples)

    def take(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.samples[rows], None if self.labels is None else self.labels[rows]
