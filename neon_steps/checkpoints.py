"""Checkpoint layouts, read one tensor at a time and written front to back.

Read: safetensors (one file, or Hugging Face shards with their index), and PyTorch checkpoints
(.pt/.pth/.bin/.ckpt through `torch.load(weights_only=True)`; pickles that need code to load only
when the user says so). Write: safetensors by hand, header first, so that a merge can stream.
"""
from __future__ import annotations

import abc
import ctypes
import json
import math
import mmap
import os
import pickle
import re
import struct
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

from neon_steps import user_files
from neon_steps.errors import MergeError, NotRecognised
from neon_steps.io import header_bytes

DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
    "U64": torch.uint64, "U32": torch.uint32, "U16": torch.uint16, "U8": torch.uint8, "BOOL": torch.bool,
}
DTYPE_NAMES = {dtype: name for name, dtype in DTYPES.items()}
TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DataParallel, torch.compile


@dataclass(frozen=True)
class TensorSpec:
    dtype: torch.dtype
    shape: tuple[int, ...]

    @classmethod
    def of(cls, tensor: torch.Tensor) -> TensorSpec:
        return cls(tensor.dtype, tuple(tensor.shape))

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


class Checkpoint(abc.ABC):
    """The tensors of a checkpoint: every name's spec up front, the values one at a time."""

    path: Path                    # as the user named it
    files: list[Path]             # every file it is read from; its hash covers them in this order
    specs: dict[str, TensorSpec]  # in storage order
    metadata: dict[str, str]

    @abc.abstractmethod
    def read(self, name: str) -> torch.Tensor:
        """The tensor `name`, contiguous."""

    def close(self) -> None:
        pass

    def __enter__(self) -> Checkpoint:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class SafetensorsCheckpoint(Checkpoint):
    """One safetensors file or the shards of an index, memory-mapped. The pages of a tensor leave
    the process when the next one is read (they stay in the page cache), so the RSS holds one
    tensor, not the file, as it would through `safe_open`."""

    def __init__(self, path: Path, shards: list[Path], index: Path | None = None,
                 shard_of: Mapping[str, Path] | None = None):
        self.path, self.files = path, ([index] if index else []) + shards
        self.specs, self.metadata, self._where, self._last = {}, {}, {}, None
        for shard in shards:
            specs, offsets, metadata = read_header(shard)
            with open(shard, "rb") as f:  # a private mapping is writable, as torch.frombuffer wants
                pages = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
            self.metadata = self.metadata or metadata
            for name, spec in specs.items():
                if shard_of is None or shard_of.get(name) == shard:
                    self.specs[name], self._where[name] = spec, (pages, offsets[name])
        if missing := [name for name in shard_of or {} if name not in self.specs]:
            raise MergeError(f"{index}: {missing[0]!r} is not in its shard {shard_of[missing[0]].name}")

    @classmethod
    def from_index(cls, index: Path) -> SafetensorsCheckpoint:
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
            shard_of = {name: index.parent / shard for name, shard in weight_map.items()}
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise MergeError(f"{index}: not a safetensors index ({err!r})") from None
        return cls(index, sorted(set(shard_of.values())), index, shard_of)

    def read(self, name: str) -> torch.Tensor:
        """The tensor `name`, without a copy: it reads the file's pages as it is used."""
        self._release()
        spec, (pages, start) = self.specs[name], self._where[name]
        if spec.nbytes == 0:
            return torch.empty(spec.shape, dtype=spec.dtype)
        self._last = pages, start, spec.nbytes
        count = spec.nbytes // spec.dtype.itemsize
        return torch.frombuffer(pages, dtype=spec.dtype, count=count, offset=start).view(spec.shape)

    def _release(self) -> None:
        """Unmap the pages of the previous tensor from this process (a view of it reads them again)."""
        if self._last:
            pages, start, size = self._last
            aligned = start - start % mmap.PAGESIZE
            pages.madvise(mmap.MADV_DONTNEED, aligned, start + size - aligned)
            self._last = None

    def close(self) -> None:
        self._release()
        self._where.clear()  # the mappings close once no tensor views them


class TorchCheckpoint(Checkpoint):
    """A PyTorch checkpoint; memory-mapped when it is a zip archive (what torch.save writes)."""

    def __init__(self, path: Path, key: str | None, allow_pickle: bool):
        self.path, self.files, self.metadata = path, [path], {}
        self._tensors = state_dict_at(_unpickle(path, allow_pickle), key, path)
        self.specs = {name: TensorSpec.of(t) for name, t in self._tensors.items()}

    def read(self, name: str) -> torch.Tensor:
        return self._tensors[name].contiguous()


def open_checkpoint(path: str | Path, key: str | None = None, allow_pickle: bool = False) -> Checkpoint:
    """A safetensors file, index or folder; or a PyTorch checkpoint whose weights sit at `key`
    (a dotted path such as `ema` or `model.state_dict`; .pt/.pth/.bin/.ckpt/.pkl only)."""
    path = Path(path)
    if path.is_dir():
        return _open_folder(path)
    if not path.is_file():
        raise MergeError(f"{path}: no such file")
    if path.name.endswith(".index.json"):
        return SafetensorsCheckpoint.from_index(path)
    if path.suffix == ".safetensors":
        return SafetensorsCheckpoint(path, [path])
    if path.suffix in (*TORCH_SUFFIXES, ".pkl"):
        return TorchCheckpoint(path, key, allow_pickle)
    raise MergeError(f"{path}: unknown checkpoint format (expected .safetensors, a safetensors index "
                     f"or folder, {'/'.join(TORCH_SUFFIXES)} or .pkl)")


def _open_folder(folder: Path) -> Checkpoint:
    """A Hugging Face model folder: its shard index, or its single safetensors file."""
    for pattern in ("*.safetensors.index.json", "*.safetensors"):
        found = sorted(folder.glob(pattern))
        if len(found) == 1:
            return open_checkpoint(found[0])
        if found:
            raise MergeError(f"{folder}: several {pattern} files ({', '.join(p.name for p in found)}); name one")
    raise MergeError(f"{folder}: no safetensors file or index in this folder")


def read_header(path: Path) -> tuple[dict[str, TensorSpec], dict[str, int], dict[str, str]]:
    """The specs (in storage order), absolute data offsets and metadata of a safetensors file."""
    if not path.is_file():
        raise MergeError(f"{path}: no such file")
    size = path.stat().st_size
    with open(path, "rb") as f:
        prefix = f.read(8)
        length = struct.unpack("<Q", prefix)[0] if len(prefix) == 8 else size
        if length > size - 8:
            raise MergeError(f"{path}: not a safetensors file (bad header length)")
        raw = f.read(length)
    try:
        header = json.loads(raw)
        metadata = header.pop("__metadata__", None) or {}
        entries = sorted(header.items(), key=lambda item: item[1]["data_offsets"][0])
        specs = {name: TensorSpec(DTYPES[entry["dtype"]], tuple(entry["shape"])) for name, entry in entries}
        offsets = {name: 8 + length + entry["data_offsets"][0] for name, entry in entries}
        bad = [name for name, entry in entries if _span(entry) != specs[name].nbytes]
    except (ValueError, KeyError, TypeError, AttributeError, IndexError) as err:
        raise MergeError(f"{path}: not a safetensors file ({err!r})") from None
    if bad:
        raise MergeError(f"{path}: tensor {bad[0]!r} has data offsets that do not match its shape and dtype")
    if any(offsets[name] + specs[name].nbytes > size for name in specs):
        raise MergeError(f"{path}: truncated (tensor data past the end of the file)")
    return specs, offsets, metadata


def _span(entry: Mapping[str, Any]) -> int:
    begin, end = entry["data_offsets"]
    return end - begin if 0 <= begin <= end else -1


def _unpickle(path: Path, allow_pickle: bool) -> Any:
    trust = "pass --allow-pickle (allow_pickle=True) only if you trust it"
    mappable = is_torch_zip(path)  # torch.load maps zip archives only
    if path.suffix == ".pkl" and not allow_pickle:
        raise MergeError(f"{path} is a pickle, which runs code to load; {trust}")
    try:
        if path.suffix == ".pkl":
            with open(path, "rb") as f:
                return pickle.load(f)
        try:
            return torch.load(path, map_location="cpu", mmap=mappable, weights_only=True)
        except pickle.UnpicklingError as err:
            if not allow_pickle:
                raise MergeError(f"{path} needs code to load ({_refusal(err)}); {trust}") from None
        return torch.load(path, map_location="cpu", mmap=mappable, weights_only=False)
    except MergeError:
        raise
    except Exception as err:  # unpickling runs arbitrary code: any error means "cannot load"
        raise MergeError(f"{path}: cannot load ({type(err).__name__}: {str(err).splitlines()[0]})") from None




def is_torch_zip(path: Path) -> bool:
    """True for a zip archive (torch.save), False for a pickle. A PyTorch checkpoint is one or the
    other; anything else (a saved HTML page, a text file) is not a checkpoint at all, and is
    refused as such: --allow-pickle would not help."""
    try:
        found = user_files.kind(path)
    except NotRecognised as err:
        raise MergeError(f"{path}: not a checkpoint: {err}") from None
    if found not in user_files.TORCH_FILE:
        raise MergeError(f"{path}: not a checkpoint: neither a zip archive (torch.save) nor a pickle")
    return found == "zip"


def _refusal(err: Exception) -> str:
    """What `torch.load(weights_only=True)` refused, in a few words."""
    if culprit := re.search(r"GLOBAL (\S+)", str(err)):
        return f"it pickles {culprit[1]}"
    reason = re.search(r"WeightsUnpickler error: ([^\n]*)", str(err))
    return reason[1] if reason else str(err).splitlines()[0]


def state_dict_at(obj: Any, key: str | None, path: Path) -> dict[str, torch.Tensor]:
    """The tensors of the mapping (or module) at dotted `key`, wrapper prefixes removed."""
    where, walked = "the top level", []
    for part in key.split(".") if key else ():
        if not isinstance(obj, Mapping) or part not in obj:
            raise MergeError(f"{path}: no key {part!r} at {where} (keys: {_keys(obj)})")
        obj = obj[part]
        walked.append(part)
        where = f"key {'.'.join(walked)!r}"
    if isinstance(obj, torch.nn.Module):
        obj = obj.state_dict()
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)} if isinstance(obj, Mapping) else {}
    if not tensors:
        raise MergeError(f"{path}: no tensors at {where}; choose the weights with --key (keys: {_keys(obj)})")
    return _unwrapped(tensors)


def _keys(obj: Any) -> str:
    if not isinstance(obj, Mapping):
        return f"none, it is a {type(obj).__name__}"
    keys = [str(k) for k in obj]
    return ", ".join(keys[:20]) + (f", ... ({len(keys)} in all)" if len(keys) > 20 else "")


def _unwrapped(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    for prefix in WRAPPER_PREFIXES:
        if all(name.startswith(prefix) for name in tensors):
            return _unwrapped({name[len(prefix):]: t for name, t in tensors.items()})
    return tensors


def encode_header(specs: Mapping[str, TensorSpec], metadata: Mapping[str, str]) -> bytes:
    """The length prefix and JSON header of a safetensors file holding `specs` in this order."""
    header: dict[str, Any] = {"__metadata__": dict(metadata)}
    offset = 0
    for name, spec in specs.items():
        if spec.dtype not in DTYPE_NAMES:
            raise MergeError(f"tensor {name!r} is {spec.dtype}, which safetensors cannot store")
        header[name] = {"dtype": DTYPE_NAMES[spec.dtype], "shape": list(spec.shape),
                        "data_offsets": [offset, offset + spec.nbytes]}
        offset += spec.nbytes
    return header_bytes(header)


class SafetensorsWriter:
    """One safetensors file written front to back: the header, then each tensor's bytes in the
    order of `specs`. `finish` may rewrite the metadata if the header keeps its length. The disk
    starts writing every `WRITEBACK_BYTES` written (where the system can be told so), so that the
    final fsync waits for the last of them only, not for the whole file."""

    WRITEBACK_BYTES = 64 << 20

    def __init__(self, path: Path, specs: Mapping[str, TensorSpec], metadata: Mapping[str, str]):
        self.specs = specs
        self._header = encode_header(specs, metadata)
        self._file = open(path, "wb")
        self._file.write(self._header)
        self._written = self._pushed = len(self._header)

    def write(self, tensor: torch.Tensor) -> None:
        self._written += self._file.write(tensor.reshape(-1).view(torch.uint8).numpy())  # no copy when contiguous
        if self._written - self._pushed >= self.WRITEBACK_BYTES:
            self._file.flush()
            start_writeback(self._file.fileno(), self._pushed, self._written - self._pushed)
            self._pushed = self._written

    def restart(self, name: str) -> None:
        """Go back to the start of tensor `name`, to write it again (and what follows it)."""
        offset = len(self._header)
        for other, spec in self.specs.items():
            if other == name:
                break
            offset += spec.nbytes
        self._file.seek(offset)
        self._written = offset
        self._pushed = min(self._pushed, offset)

    def sync(self) -> None:
        """Push the bytes written so far to the disk."""
        self._file.flush()
        os.fsync(self._file.fileno())

    def finish(self, metadata: Mapping[str, str]) -> None:
        header = encode_header(self.specs, metadata)
        if len(header) != len(self._header):
            raise ValueError("the final metadata must have the length of the first")
        self._file.seek(0)
        self._file.write(header)
        self._file.close()

    def __enter__(self) -> SafetensorsWriter:
        return self

    def __exit__(self, *exc) -> None:
        self._file.close()


def _sync_file_range() -> Any:
    """Linux's sync_file_range(2), which Python's os module lacks; None elsewhere."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        function = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


_SYNC_FILE_RANGE = _sync_file_range() if sys.platform.startswith("linux") else None
SYNC_FILE_RANGE_WRITE = 2


def start_writeback(fd: int, offset: int, nbytes: int) -> None:
    """Have the kernel start writing these bytes to the disk, without waiting for them (a hint:
    nothing happens where it is not supported)."""
    if _SYNC_FILE_RANGE is not None:
        _SYNC_FILE_RANGE(fd, offset, nbytes, SYNC_FILE_RANGE_WRITE)
