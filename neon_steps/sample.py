"""Stage `sample` (rules sample_synthetic, gather_synthetic): draw the synthetic set S of |S|
samples from the base model with its usual sampler κ (class-balanced labels for conditional
models), as parts of whole shards, one per job (`synthetic.images_per_job`), and list them in S's
manifest. Part j continues the draw at its first shard, so K jobs give the bits one job gives."""

import shutil
from typing import Any, Mapping

from neon_steps.device import default_device
from neon_steps.io import file_identity, fingerprint
from neon_steps.models import load_adapter
from neon_steps.sampling import balanced_labels, draw_shards
from neon_steps.synthetic import part_count, part_range, write_part


def sample_synthetic(model: Mapping[str, Any], size: int, part: int, base: str, out: str) -> None:
    """Part `part` of S: its rows' samples, drawn shard by shard and written as they come."""
    settings = model["synthetic"]
    rows = part_range(settings, size, part)
    adapter = load_adapter(model, device=default_device()).load(base)
    labels = (balanced_labels(size, adapter.num_classes, settings["seed"])[rows.start:rows.stop]
              if adapter.conditional else None)
    shards = f"{out}.shards"  # finished shards survive a killed job
    stream = draw_shards(adapter, len(rows), settings["seed"], settings["kappa"], settings["shard_size"], labels,
                         desc=f"S part {part + 1}/{part_count(settings, size)}", resume_dir=shards,
                         first_shard=rows.start // settings["shard_size"],
                         fingerprint=fingerprint([file_identity(base), settings, size, part]))
    write_part(out, stream, len(rows), labels,
               {"model": model["name"], "kappa": settings["kappa"], "seed": settings["seed"], "first": rows.start})
    shutil.rmtree(shards)

