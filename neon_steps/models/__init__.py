"""Model adapters, looked up by the `adapter` field of a model's config."""
from __future__ import annotations

import importlib

from neon_steps.config import ConfigError
from neon_steps.models.base import Adapter, Kappa

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


def adapter_class(name: str) -> type[Adapter]:
    """Resolve a built-in short name or a `package.module:Class` import path."""
    target = BUILTIN.get(name, name)
    module_name, _, class_name = target.partition(":")
    if not class_name:
        raise ConfigError(f"adapter {name!r}: expected one of {sorted(BUILTIN)} or 'package.module:Class'")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as err:
        raise ConfigError(f"adapter {name!r}: cannot import {target} ({err})") from None
    if not (isinstance(cls, type) and issubclass(cls, Adapter)):
        raise ConfigError(f"adapter {name!r}: {target} is not a neon_steps.models.Adapter subclass")
    return cls


def load_adapter(model: dict, device="cpu") -> Adapter:
    """An adapter for a model's config section, with freshly initialised weights (a real model's
    adapter may read the structure, not the weights, from `base.checkpoint`)."""
    return adapter_class(model["adapter"])(model.get("arch", {}), device=device, base=model.get("base"))


__all__ = ["Adapter", "Kappa", "BUILTIN", "adapter_class", "load_adapter"]
