"""Stage `dataset` (rule store_dataset): store a data set that ships inside a package as a workflow
artifact, with its fixed train / held-out split. For `digits`: scikit-learn's load_digits(), 1,797
8x8 images in 10 classes, gray levels 0..16 scaled to uint8 0..255 (images [N,1,8,8] uint8, labels
int64)."""

import sys
from typing import Any, Mapping

import torch

from neon_steps import data
from neon_steps.errors import NeonError
from neon_steps.io import save_tensors


def store_dataset(name: str, dataset: Mapping[str, Any], out: str) -> None:
    if dataset["kind"] != "digits":
        raise NeonError(f"datasets.{name}: kind {dataset['kind']!r} is generated on the fly, not stored")
    split = data.digits(dataset)
    counts = {part: torch.bincount(split[f"{part}_labels"]).tolist() for part in ("train", "heldout")}
    print(f"dataset {name}: {len(split['train_labels'])} train, {len(split['heldout_labels'])} held out; "
          f"per class {counts}", file=sys.stderr)
    save_tensors(out, split, {"dataset": name, "kind": dataset["kind"], "source": "sklearn.datasets.load_digits",
                              "heldout": len(split["heldout_labels"]), "split_seed": dataset.get("split_seed", 0),
                              "classes": counts})
