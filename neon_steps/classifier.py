"""Stage `classifier`: train the CNN whose features FID and precision/recall use for an image data
set (metrics/digits.py; registered with torch-fidelity as "neon-digits-cnn"), on the data set's
train split, seeded; its accuracy on the held-out split goes in the log and the file's metadata."""

import argparse
import sys
from typing import Any, Mapping

from neon_steps import data, stage


def train(name: str, settings: Mapping[str, Any], data_path: str, out: str) -> None:
    from neon_steps.metrics import digits

    images, labels = data.load_split(data_path, "train")
    heldout, heldout_labels = data.load_split(data_path, "heldout")
    net = digits.train_classifier(images, labels, settings)
    acc = {"train": digits.accuracy(net, images, labels), "heldout": digits.accuracy(net, heldout, heldout_labels)}
    print(f"classifier {name}: accuracy train {acc['train']:.4f}, held out {acc['heldout']:.4f}", file=sys.stderr)
    digits.save(net, out, settings, {"dataset": name, "accuracy": acc})


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default="config/digits.yaml")
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--data", required=True, type=stage.existing("safetensors"),
                        help="the dataset rule's output (.safetensors)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    stage.configure_torch(args.threads)
    dataset = stage.dataset_from_args(args)
    with stage.logged(None):
        train(args.dataset, dataset.get("reference", {}).get("classifier", {}), args.data, args.out)
    return 0


if __name__ == "__main__":
    if "snakemake" in globals():
        smk = snakemake  # noqa: F821
        stage.run_snakemake(smk, lambda: train(smk.wildcards.dataset, smk.params.settings, smk.input[0], smk.output[0]))
    else:
        sys.exit(main())
