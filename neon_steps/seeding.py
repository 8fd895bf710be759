"""Seeds derived from named integers, so that every draw depends on what it is for, not on
how the work was split into jobs, shards or segments."""
from __future__ import annotations

import hashlib

import torch


def derive_seed(*parts: int | str) -> int:
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def generator(*parts: int | str) -> torch.Generator:
    return torch.Generator().manual_seed(derive_seed(*parts))
