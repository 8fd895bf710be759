"""The adapter interface: the only place that knows a model codebase.

The pipeline owns the optimizer, the learning-rate schedule, budget accounting, seeding and the
merge; an adapter owns the network, its sampler and its loss.
"""
from __future__ import annotations

import abc
from typing import Any, ClassVar, Mapping

import torch
from torch import nn

from neon_steps.io import load_tensors, save_tensors
from neon_steps.models.knobs import ANY, Knobs

Kappa = Mapping[str, Any]  # sampler settings: steps, score scale, temperature, CFG scale, ...


class Adapter(abc.ABC):
    """One model family. Subclasses build `self.net` from the config's `arch` mapping."""

    family: ClassVar[str]        # diffusion | flow | autoregressive | few-step
    num_classes: int = 0         # > 0 for class-conditional models (set by build)
    checkpoint_key: ClassVar[str | None] = None  # where θ_r sits in a checkpoint dict, by default
    # The settings `arch` and `kappa` may hold (neon_steps/models/knobs.py): the workflow checks a
    # config against them at load time. An adapter that declares none gets its settings unchecked.
    arch_knobs: ClassVar[Knobs] = ANY
    kappa_knobs: ClassVar[Knobs] = ANY

    def __init__(self, arch: Mapping[str, Any], device: str | torch.device = "cpu",
                 base: Mapping[str, Any] | None = None):
        """`base`: the model's `base` section; for a real model it names the user's checkpoint
        (`checkpoint`, `key`, `allow_pickle`, `source`), which some codebases need to build the
        network (a diffusers folder's config, an EDM pickle). `self.arch` holds every declared
        knob (the defaults filled in)."""
        self.arch = self.arch_knobs(arch, "arch")
        self.base = dict(base or {})
        self.device = torch.device(device)
        self.net: nn.Module = self.build(self.arch).to(self.device)

    # -- what each family implements --------------------------------------------------------
    @abc.abstractmethod
    def build(self, arch: Mapping[str, Any]) -> nn.Module:
        """Construct the network with freshly initialised weights (seeded by the caller)."""

    @abc.abstractmethod
    def sample(self, n: int, generator: torch.Generator, kappa: Kappa,
               labels: torch.Tensor | None = None) -> torch.Tensor:
        """Draw `n` samples with the sampler settings `kappa`, all randomness from `generator`."""

    @abc.abstractmethod
    def loss(self, batch: torch.Tensor, generator: torch.Generator,
             labels: torch.Tensor | None = None) -> torch.Tensor:
        """The model's own training loss on a batch of data, all randomness from `generator`."""

    @abc.abstractmethod
    def nfe(self, kappa: Kappa) -> int:
        """Network evaluations per sample under `kappa`, for the tables."""

    # -- shared behaviour -----------------------------------------------------------------------
    def settings(self, kappa: Kappa) -> dict[str, Any]:
        """`kappa` with every declared knob (the defaults filled in): what `sample` and `nfe`
        read, as the workflow's configs leave defaults out."""
        return self.kappa_knobs(kappa, "kappa", self.arch)

    @property
    def conditional(self) -> bool:
        return self.num_classes > 0

    def mergeable(self, name: str) -> bool:
        """Learned floating-point parameters only; buffers and frozen weights stay the base's."""
        param = dict(self.net.named_parameters()).get(name)
        return param is not None and param.requires_grad and param.is_floating_point()

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach() for k, v in self.net.state_dict().items()}

    def load_state_dict(self, tensors: Mapping[str, torch.Tensor]) -> None:
        self.net.load_state_dict({k: v.to(self.device) for k, v in tensors.items()}, strict=True)

    def load_checkpoint(self, path) -> "Adapter":
        """θ_r from a checkpoint in the codebase's own format (the `prepare_base` rule's conversion).
        By default: the tensors at `base.key` (or `checkpoint_key`) of a safetensors file or a
        PyTorch checkpoint, `module.` prefixes stripped; pickles only with `base.allow_pickle`."""
        from neon_steps.checkpoints import open_checkpoint

        key = self.base.get("key", self.checkpoint_key)
        with open_checkpoint(path, key, bool(self.base.get("allow_pickle", False))) as ckpt:
            self.load_state_dict({name: ckpt.read(name) for name in ckpt.specs})
        return self

    def load(self, path) -> "Adapter":
        self.load_state_dict(load_tensors(path))
        return self

    def save(self, path, metadata: Mapping[str, object] | None = None) -> None:
        """The weights, with the names `mergeable` allows in the metadata: a merge reads them
        there and needs no model code (no codebase, no network built)."""
        tensors = self.state_dict()
        save_tensors(path, tensors, {"family": self.family, "mergeable": sorted(filter(self.mergeable, tensors)),
                                     **(metadata or {})})
