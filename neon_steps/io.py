"""Atomic, pickle-free file I/O shared by every stage.

A killed job must never leave a file that looks complete, so every write goes to a
temporary file beside its target and is renamed into place only once it is whole.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import struct
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Mapping

from neon_steps.errors import NeonError, NotRecognised

if TYPE_CHECKING:
    import torch


_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `target`; rename it onto `target` on success."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp's 0600 would hide results from the rest of a group
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        with open(tmp, "rb+") as f:  # the bytes reach the disk before the name does
            os.fsync(f.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path: str | os.PathLike):
    """A JSON file's value; a file that is not JSON is named in one line."""
    try:
        return json.loads(Path(path).read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise NeonError(f"{path}: not a JSON file ({err})") from None


def save_tensors(path: str | os.PathLike, tensors: Mapping[str, torch.Tensor],
                 metadata: Mapping[str, object] | None = None) -> None:
    """Save tensors as safetensors; metadata values that are not strings are stored as JSON."""
    from safetensors.torch import save_file  # imported here: torch-free callers (search rounds) stay fast

    meta = metadata_strings(metadata or {})
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def metadata_strings(metadata: Mapping[str, object]) -> dict[str, str]:
    """Metadata as a safetensors header holds it: strings as they are, other values as JSON."""
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}


def copy_tensors(src: str | os.PathLike, dst: str | os.PathLike, rename: Callable[[str], str | None],
                 metadata: Mapping[str, str]) -> None:
    """Copy the tensors of a safetensors file that `rename` gives a new name (None: leave it out)
    to a new file, byte for byte: nothing is decoded, so no torch import, and memory is one chunk
    whatever the file's size (a training state holds the optimizer's moments too)."""
    with open(src, "rb") as f:
        header, length = read_header(f)
        header.pop("__metadata__", None)
        kept = sorted(((new, entry) for name, entry in header.items() if (new := rename(name)) is not None),
                      key=lambda item: item[1]["data_offsets"][0])
        out: dict[str, object] = {"__metadata__": dict(metadata)}
        spans, offset = [], 0
        for new, entry in kept:
            begin, end = entry["data_offsets"]
            out[new] = {"dtype": entry["dtype"], "shape": entry["shape"],
                        "data_offsets": [offset, offset + end - begin]}
            spans.append((8 + length + begin, end - begin))
            offset += end - begin
        with atomic_path(dst) as tmp, open(tmp, "wb") as target:
            target.write(header_bytes(out))
            for start, size in spans:
                f.seek(start)
                while size:
                    chunk = f.read(min(size, COPY_CHUNK_BYTES))
                    target.write(chunk)
                    size -= len(chunk)


COPY_CHUNK_BYTES = 8 << 20


def header_bytes(header: Mapping[str, object]) -> bytes:
    """A safetensors file's first bytes: the length prefix and the JSON header (tensor entries and
    "__metadata__"), padded so that tensor data starts 8-byte aligned."""
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text


def load_tensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except SafetensorError as err:  # the library's error names no file: name it, and what it is instead
        raise not_safetensors(path, err) from None


def load_metadata(path: str | os.PathLike) -> dict[str, str]:
    with open(path, "rb") as f:
        return dict(read_header(f)[0].get("__metadata__") or {})


def read_header(f) -> tuple[dict, int]:
    """A safetensors file's JSON header (tensor entries and "__metadata__") and its length; a file
    that is not one raises NotRecognised, saying what it looks like instead."""
    size = os.fstat(f.fileno()).st_size
    head = f.read(8)
    (length,) = struct.unpack("<Q", head) if len(head) == 8 else (size,)
    if 8 + length > size:  # read no gigabytes of "header" from an HTML page
        raise not_safetensors(f.name)
    try:
        header = json.loads(f.read(length))
    except (ValueError, UnicodeDecodeError):
        raise not_safetensors(f.name) from None
    if not isinstance(header, dict):
        raise not_safetensors(f.name)
    return header, length


def not_safetensors(path: str | os.PathLike, err: Exception | None = None) -> NotRecognised:
    """The error for a file that should be safetensors and is not: what it is, or looks like; a
    file whose header is sound but not its data (a truncated copy) is named as damaged (`err`)."""
    from neon_steps import user_files  # here: user_files reads headers with read_header

    try:
        found = user_files.kind(path)
        what = f"a damaged safetensors file ({err})" if found == "safetensors" else f"a {found} file, not safetensors"
    except NotRecognised as not_recognised:
        what = str(not_recognised)
    return NotRecognised(f"{path}: {what}")


def file_identity(path: str | os.PathLike) -> dict:
    """Cheap identity of an input file (size and modification time): a regenerated input no
    longer matches what a resumable partial result was computed from."""
    stat = Path(path).stat()
    return {"path": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def fingerprint(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:32]
