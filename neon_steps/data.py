"""Real data that ships with the workflow: nothing is downloaded."""
from __future__ import annotations

from typing import Any, Mapping

import torch

from neon_steps.errors import ConfigError


def gaussian2d(spec: Mapping[str, Any], n: int, seed: int) -> torch.Tensor:
    """`n` points from N(mean, cov), the 2-D toy's target."""
    mean = torch.tensor(spec["mean"], dtype=torch.float64)
    chol = torch.linalg.cholesky(torch.tensor(spec["cov"], dtype=torch.float64))
    z = torch.randn((n, len(mean)), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return (mean + z @ chol.T).float()


# -- scikit-learn's digits: 1,797 real 8x8 images in 10 classes, shipped inside the package ---------
DIGITS_LEVELS = 17  # the original gray levels 0..16


def digits_to_uint8(levels: torch.Tensor) -> torch.Tensor:
    """Gray levels 0..16 to uint8 0..255 (v·255/16, rounded): 16 -> 255, 8 -> 128."""
    return torch.round(levels.double() * 255 / 16).to(torch.uint8)


def uint8_to_digits(images: torch.Tensor) -> torch.Tensor:
    """uint8 0..255 to the nearest gray level 0..16 (the inverse of digits_to_uint8 on its image)."""
    return torch.round(images.double() * 16 / 255).long()


def digits(dataset: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """All of load_digits(), as uint8 images [N,1,8,8] and int64 labels, split into a fixed train
    and held-out part: `heldout` images, an equal share of each class (the first classes take the
    remainder), chosen by `split_seed`."""
    from sklearn.datasets import load_digits

    raw = load_digits()
    images = digits_to_uint8(torch.from_numpy(raw.images))[:, None]
    labels = torch.from_numpy(raw.target).long()
    heldout = int(dataset.get("heldout", 297))
    classes = int(labels.max()) + 1
    if not 0 < heldout < len(labels) - classes:
        raise ConfigError(f"datasets: heldout must be between 1 and {len(labels) - classes - 1}, not {heldout}")
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(int(dataset.get("split_seed", 0))))
    is_heldout = torch.zeros(len(labels), dtype=torch.bool)
    for c in range(classes):
        rows = order[labels[order] == c]
        is_heldout[rows[: heldout // classes + (c < heldout % classes)]] = True
    return {"train_images": images[~is_heldout], "train_labels": labels[~is_heldout],
            "heldout_images": images[is_heldout], "heldout_labels": labels[is_heldout]}


def load_split(path, split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """Images and labels of one split of a stored image data set (the `store_dataset` rule's artifact)."""
    from neon_steps.io import load_tensors

    tensors = load_tensors(path)
    return tensors[f"{split}_images"], tensors[f"{split}_labels"]


def real_training_set(dataset: Mapping[str, Any], settings: Mapping[str, Any],
                      path=None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The real samples a base model is trained on, and their labels (None if unconditional).
    Image data sets come from their stored artifact `path` (the train split; `n_real` below its
    size takes a subset chosen by `data_seed`)."""
    if dataset["kind"] == "gaussian2d":
        return gaussian2d(dataset, settings["n_real"], settings["data_seed"]), None
    if dataset["kind"] == "digits":
        if path is None:
            raise ConfigError("datasets: a digits model trains on the stored data set; pass its path")
        images, labels = load_split(path, "train")
        n = int(settings["n_real"])
        if n > len(images):
            raise ConfigError(f"base.n_real: {n} is more than the {len(images)} training images")
        if n < len(images):
            rows = torch.randperm(len(images), generator=torch.Generator().manual_seed(int(settings["data_seed"])))[:n]
            images, labels = images[rows], labels[rows]
        return images, labels
    raise ConfigError(f"datasets: unknown kind {dataset['kind']!r}")
