"""Stage `base` (rule prepare_base): θ_r. Embedded models train it on real data; real models
(`base.checkpoint`) read the user's checkpoint through their adapter and save its θ_r weights, so
that every later stage reads one safetensors file whatever the codebase's own format."""

import sys
from pathlib import Path
from typing import Any, Mapping

import torch

from neon_steps import data
from neon_steps.device import default_device
from neon_steps.errors import NeonError
from neon_steps.models import load_adapter
from neon_steps.training import Recipe, Trainer, steps_for


def train_base(model: Mapping[str, Any], out: str, data_path: str | None = None) -> None:
    """`data_path`: the stored data set (the `store_dataset` rule's output) for image data sets."""
    settings = model["base"]
    real, labels = data.real_training_set(model["dataset_spec"], settings, data_path)
    torch.manual_seed(settings["seed"])  # initial weights
    adapter = load_adapter(model, device=default_device())
    recipe = Recipe.from_config(settings)
    trainer = Trainer(adapter, recipe)
    losses = trainer.train(real, labels, steps_for(settings["images"] * 1e6, recipe.batch_size), desc="base")
    print(f"base: {trainer.step} steps, {trainer.images_seen} images, final loss {losses[-1]:.4f}", file=sys.stderr)
    adapter.save(out, {"model": model["name"], "images_seen": trainer.images_seen})


def import_base(model: Mapping[str, Any], out: str) -> None:
    """θ_r from the user's checkpoint (`base.checkpoint`), converted by the model's adapter."""
    where, settings = f"models.{model['name']}.base", model["base"]
    for field in ("checkpoint", "source"):
        if field in settings and not Path(settings[field]).exists():
            raise NeonError(f"{where}.{field}: {settings[field]}: no such file or folder")
    adapter = load_adapter(model, device=default_device())
    adapter.load_checkpoint(settings["checkpoint"])
    print(f"base: θ_r from {settings['checkpoint']} ({sum(t.numel() for t in adapter.state_dict().values())} "
          f"values)", file=sys.stderr)
    adapter.save(out, {"model": model["name"], "checkpoint": settings["checkpoint"]})


def make_base(model: Mapping[str, Any], out: str, data_path: str | None = None) -> None:
    if "checkpoint" in model["base"]:
        import_base(model, out)
    else:
        train_base(model, out, data_path)
