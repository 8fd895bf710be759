"""The files a config names (checkpoints, source trees, Inception weights, reference statistics),
checked when the workflow loads the config, before any job: a job that failed on one would
already have deleted its previous output. Torch-free: a dry run reads a few bytes of each file.
"""
from __future__ import annotations

import struct
import zipfile
from pathlib import Path
from typing import Any, Iterator, Mapping

from neon_steps.errors import NotRecognised
from neon_steps.io import read_header

PICKLE_PROTO = 0x80  # the first byte of every pickle of protocol 2 or later (torch.save's legacy format too)


def kind(path: str | Path) -> str:
    """"folder", "safetensors", "zip" (torch.save, .npz) or "pickle"; anything else raises
    NotRecognised with what the file begins with."""
    path = Path(path)
    if path.is_dir():
        return "folder"
    if zipfile.is_zipfile(path):
        return "zip"
    with open(path, "rb") as f:
        head = f.read(64)
    if head[:1] == bytes([PICKLE_PROTO]):
        return "pickle"
    if _is_safetensors(path, head):
        return "safetensors"
    if not head:
        raise NotRecognised("the file is empty")
    text = head.decode("utf-8", "replace").lstrip().lower()
    html = text.startswith(("<!doctype", "<html"))
    looks = " (an HTML page: a download that saved an error or sign-in page?)" if html else ""
    raise NotRecognised(f"neither a zip archive (torch.save, .npz), a pickle nor a safetensors file; "
                        f"it begins {head[:24]!r}{looks}")


def _is_safetensors(path: Path, head: bytes) -> bool:
    """An 8-byte header length, then that many bytes of JSON."""
    if len(head) < 10 or head[8:9] != b"{":
        return False
    (length,) = struct.unpack("<Q", head[:8])
    if length + 8 > path.stat().st_size:
        return False
    with open(path, "rb") as f:
        try:
            read_header(f)
        except ValueError:
            return False
    return True


# What each field may be: the kinds of file the stage that reads it can open.
TORCH_FILE = {"zip", "pickle"}
CHECKPOINT_KINDS = {  # by adapter; other adapters read safetensors, torch.save files or a folder of them
    "diffusers": {"folder"},
    "edm": {"pickle"},
}
CHECKPOINT_NEEDS = {  # by adapter: base settings its checkpoints cannot be read without
    "edm": {"source": "EDM's pickles need EDM's source tree to load; name a checkout of NVlabs/edm"},
}
DATASET_FILES = {
    "inception_weights": (TORCH_FILE, "torch-fidelity's Inception weights (a torch.save file)"),
    "statistics": ({"zip"}, "an .npz of mu and sigma"),
    "real": ({"zip"}, "an .npz of arr_0 images or features"),
}


def named_files(config: Mapping[str, Any]) -> Iterator[tuple[str, str, str, str]]:
    """(section, name, key, path) of every user file a config names."""
    for name, model in config["models"].items():
        for key in ("checkpoint", "source"):
            if key in model["base"]:
                yield "models", name, key, model["base"][key]
    for name, dataset in config["datasets"].items():
        for key in DATASET_FILES:
            if key in dataset:
                yield "datasets", name, key, dataset[key]


def _field(section: str, name: str, key: str) -> str:
    return f"models.{name}.base.{key}" if section == "models" else f"datasets.{name}.{key}"


def mistakes(config: Mapping[str, Any]) -> list[str]:
    """One line for each user file there of the wrong kind, and each base setting an adapter's
    checkpoints need that is not given (what a dry run can say: it plans without the files)."""
    found = [f"models.{name}.base.{key}: {why}" for name, model in config["models"].items()
             if "checkpoint" in model["base"]
             for key, why in CHECKPOINT_NEEDS.get(model["adapter"], {}).items() if key not in model["base"]]
    for section, name, key, path in named_files(config):
        if Path(path).exists():
            found += _wrong_kind(_field(section, name, key), path, key,
                                 config["models"][name] if section == "models" else None)
    return found


def missing(config: Mapping[str, Any]) -> list[str]:
    """One line for each user file that is not there (what a run needs besides)."""
    return [f"{_field(section, name, key)}: {path}: no such file or folder (a dry run plans without it; "
            f"a run needs it)" for section, name, key, path in named_files(config) if not Path(path).exists()]


def _wrong_kind(field: str, path: str, key: str, model: Mapping[str, Any] | None) -> list[str]:
    """What is wrong with an existing user file: `model` for a checkpoint, None for a data set's file."""
    if key == "source":
        return [] if Path(path).is_dir() else [f"{field}: {path}: not a folder (a checkout of the model's codebase)"]
    try:
        found = kind(path)
    except NotRecognised as err:
        return [f"{field}: {path}: not a file the workflow reads: {err}"]
    except OSError as err:
        return [f"{field}: {path}: cannot be read ({err.strerror})"]
    if model is None:
        kinds, what = DATASET_FILES[key]
        return [] if found in kinds else [f"{field}: {path}: is {_a(found)}, not {what}"]
    adapter = model["adapter"]
    kinds = CHECKPOINT_KINDS.get(adapter, {"folder", "safetensors", "zip", "pickle"})
    if found not in kinds:
        return [f"{field}: {path}: is {_a(found)}; the {adapter} adapter reads {' or '.join(map(_a, sorted(kinds)))}"]
    if found == "pickle" and adapter in CHECKPOINT_KINDS and not model["base"].get("allow_pickle", False):
        return [f"{field.removesuffix('.checkpoint')}.allow_pickle: {path} is a pickle, which runs code to load; "
                f"set allow_pickle: true for a file you trust"]
    return []


def _a(kind: str) -> str:
    return {"folder": "a folder", "safetensors": "a safetensors file", "zip": "a zip archive",
            "pickle": "a pickle"}[kind]
