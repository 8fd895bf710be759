"""Stage `classifier` (rule train_classifier): train the CNN whose features FID and precision/recall
use for an image data set (metrics/digits.py; registered with torch-fidelity as "neon-digits-cnn"),
on the data set's train split, seeded; its accuracy on the held-out split goes in the log and the
file's metadata."""

import sys
from typing import Any, Mapping

from neon_steps import data


def train(name: str, settings: Mapping[str, Any], data_path: str, out: str) -> None:
    from neon_steps.metrics import digits

    images, labels = data.load_split(data_path, "train")
    heldout, heldout_labels = data.load_split(data_path, "heldout")
    net = digits.train_classifier(images, labels, settings)
    acc = {"train": digits.accuracy(net, images, labels), "heldout": digits.accuracy(net, heldout, heldout_labels)}
    print(f"classifier {name}: accuracy train {acc['train']:.4f}, held out {acc['heldout']:.4f}", file=sys.stderr)
    digits.save(net, out, settings, {"dataset": name, "accuracy": acc})
