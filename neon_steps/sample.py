"""Stage `sample` (rule sample_synthetic): draw the synthetic set S of |S| samples from the base model
with its usual sampler κ (class-balanced labels for conditional models)."""

import shutil
from typing import Any, Mapping

from neon_steps.device import default_device
from neon_steps.io import file_identity, fingerprint, save_tensors
from neon_steps.models import load_adapter
from neon_steps.sampling import balanced_labels, draw


def sample_synthetic(model: Mapping[str, Any], size: int, base: str, out: str) -> None:
    settings = model["synthetic"]
    adapter = load_adapter(model, device=default_device()).load(base)
    labels = (balanced_labels(size, adapter.num_classes, settings["seed"]) if adapter.conditional else None)
    shards = f"{out}.shards"  # finished shards survive a killed job
    samples = draw(adapter, size, settings["seed"], settings["kappa"], settings["shard_size"], labels, desc="S",
                   resume_dir=shards, fingerprint=fingerprint([file_identity(base), settings, size]))
    tensors = {"samples": samples} if labels is None else {"samples": samples, "labels": labels}
    save_tensors(out, tensors, {"model": model["name"], "kappa": settings["kappa"], "seed": settings["seed"]})
    shutil.rmtree(shards)
