"""Model adapters, looked up by the `adapter` field of a model's config.

Torch-free to import: the workflow checks a config's adapter names and their knobs when it loads
the config (a dry run), and imports an adapter's code (and torch) only in the jobs that use it.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from neon_steps.config import ConfigError, nearest
from neon_steps.models.knobs import ANY, DECLARED, Knob, Knobs

if TYPE_CHECKING:
    from neon_steps.models.base import Adapter

# Built-in adapters by short name; imported lazily so that a config naming one family does not
# pay for the dependencies of the others.
BUILTIN = {
    "toy-diffusion": "neon_steps.models.toy:ToyDiffusion",
    "toy-autoregressive": "neon_steps.models.toy:ToyAutoregressive",
    "digits-diffusion": "neon_steps.models.digits_diffusion:DigitsDiffusion",   # diffusers UNet2DModel
    "digits-flow": "neon_steps.models.digits_flow:DigitsFlow",                  # torchcfm + torchdiffeq
    "digits-autoregressive": "neon_steps.models.digits_ar:DigitsAutoregressive",
    # Real checkpoints (the paper's codebases)
    "diffusers": "neon_steps.models.diffusers_pipeline:DiffusersPipeline",     # save_pretrained folders
    "torchcfm": "neon_steps.models.torchcfm_flow:TorchCFMFlow",                 # the paper's flow model
    "edm": "neon_steps.models.edm:EDM",                                         # NVlabs/edm network pickles
    # Codebases of the paper without an adapter yet: named, so that their configs dry-run, and
    # failing with what to do when a job loads them.
    "var": "neon_steps.models.missing:VAR",
    "xar": "neon_steps.models.missing:XAR",
    "imm": "neon_steps.models.missing:IMM",
}
NOT_WRITTEN = {  # the paper's codebases without an adapter yet
    "var": ("VAR", "FoundationVision/VAR"), "xar": ("xAR", "OliverRensu/xAR"), "imm": ("IMM", "lumalabs/imm"),
}


def not_written(name: str) -> str | None:
    """What to do about a codebase of the paper that has no adapter yet, or None."""
    if name not in NOT_WRITTEN:
        return None
    codebase, repository = NOT_WRITTEN[name]
    return (f"no adapter for the {codebase} codebase ({repository}) yet; "
            f"write one (docs/adapters.md) and set adapter: package.module:Class")


def unwritten_adapters(config) -> list[str]:
    """One line for each model whose adapter is not written yet (a run stops on them before its
    first job; a dry run plans them)."""
    return [f"models.{name}.adapter: {message}" for name, model in config["models"].items()
            if (message := not_written(model["adapter"]))]


def adapter_class(name: str, where: str = "adapter") -> type[Adapter]:
    """Resolve a built-in short name or a `package.module:Class` import path; a mistake is a
    ConfigError naming the field `where`."""
    target = BUILTIN.get(name, name)
    module_name, _, class_name = target.partition(":")
    if not class_name:
        hint = nearest(name, list(BUILTIN), listed="built-in")
        raise ConfigError(f"{where}: {name!r} is neither a built-in adapter{hint} nor package.module:Class")
    from neon_steps.models.base import Adapter

    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as err:
        raise ConfigError(f"{where}: cannot import {target} ({err})") from None
    if not (isinstance(cls, type) and issubclass(cls, Adapter)):
        raise ConfigError(f"{where}: {target} is not a neon_steps.models.Adapter subclass")
    return cls


def declared_knobs(name: str, where: str = "adapter") -> tuple[Knobs, Knobs]:
    """An adapter's (arch, kappa) knobs: a built-in's without importing it, a user's adapter's
    from its class (importing it, so that a dry run reports one that cannot be imported)."""
    if name in BUILTIN:
        return DECLARED.get(name, (ANY, ANY))
    cls = adapter_class(name, where)
    return cls.arch_knobs, cls.kappa_knobs


def load_adapter(model: dict, device="cpu") -> Adapter:
    """An adapter for a model's config section, with freshly initialised weights (a real model's
    adapter may read the structure, not the weights, from `base.checkpoint`)."""
    return adapter_class(model["adapter"])(model.get("arch", {}), device=device, base=model.get("base"))


def __getattr__(name: str):
    # `from neon_steps.models import Adapter` for adapters' authors, without torch for the rest
    if name in ("Adapter", "Kappa"):
        from neon_steps.models import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Adapter", "Kappa", "Knob", "Knobs", "BUILTIN", "adapter_class", "declared_knobs", "load_adapter"]
