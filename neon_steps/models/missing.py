"""Codebases of the paper that have no adapter yet (VAR, xAR, IMM). Their configs in config/paper/
validate and dry-run; the first job that loads the model stops with what is missing and how to
add it, instead of failing somewhere inside a half-built adapter."""
from __future__ import annotations

from typing import Any, Mapping

from neon_steps.models.base import Adapter
from neon_steps.errors import NeonError


class Missing(Adapter):
    family = "none"

    def __init__(self, arch: Mapping[str, Any], device="cpu", base: Mapping[str, Any] | None = None):
        from neon_steps.models import not_written

        short = type(self).__name__.lower()
        raise NeonError(f"adapter {short!r}: {not_written(short)}")

    # Never reached: the constructor refuses.
    def build(self, arch):  # pragma: no cover
        raise NotImplementedError

    def sample(self, n, generator, kappa, labels=None):  # pragma: no cover
        raise NotImplementedError

    def loss(self, batch, generator, labels=None):  # pragma: no cover
        raise NotImplementedError

    def nfe(self, kappa):  # pragma: no cover
        raise NotImplementedError


class VAR(Missing):
    pass


class XAR(Missing):
    pass


class IMM(Missing):
    pass
