"""Stage `dataset`: store a data set that ships inside a package as a workflow artifact, with its
fixed train / held-out split. For `digits`: scikit-learn's load_digits(), 1,797 8x8 images in 10
classes, gray levels 0..16 scaled to uint8 0..255 (images [N,1,8,8] uint8, labels int64)."""

import argparse
import sys
from typing import Any, Mapping

import torch

from neon_steps import data, stage
from neon_steps.io import save_tensors


def store_dataset(name: str, dataset: Mapping[str, Any], out: str) -> None:
    if dataset["kind"] != "digits":
        raise stage.NeonError(f"datasets.{name}: kind {dataset['kind']!r} is generated on the fly, not stored")
    try:
        split = data.digits(dataset)
    except ValueError as err:
        raise stage.NeonError(str(err)) from None
    counts = {part: torch.bincount(split[f"{part}_labels"]).tolist() for part in ("train", "heldout")}
    print(f"dataset {name}: {len(split['train_labels'])} train, {len(split['heldout_labels'])} held out; "
          f"per class {counts}", file=sys.stderr)
    save_tensors(out, split, {"dataset": name, "kind": dataset["kind"], "source": "sklearn.datasets.load_digits",
                              "heldout": len(split["heldout_labels"]), "split_seed": dataset.get("split_seed", 0),
                              "classes": counts})


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default="config/digits.yaml")
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    dataset = stage.dataset_from_args(args)
    with stage.logged(None):
        store_dataset(args.dataset, dataset, args.out)
    return 0


if __name__ == "__main__":
    if "snakemake" in globals():
        smk = snakemake  # noqa: F821
        stage.run_snakemake(smk, lambda: store_dataset(smk.wildcards.dataset, smk.params.dataset, smk.output[0]))
    else:
        sys.exit(main())
