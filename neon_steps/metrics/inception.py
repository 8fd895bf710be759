"""The paper's feature space: Inception-v3 through torch-fidelity's `inception-v3-compat`
extractor (the network of EDM's and ADM's FID scripts), from a weights file the user provides —
nothing is downloaded. Reference statistics come from a local .npz with `mu` and `sigma` (EDM's
fid-refs and ADM's reference batches both store them); precision and recall (k=5) need real
features, from the reference batch's `arr_0` images (ADM), or a `real` file of images or features.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from neon_steps.metrics import extraction
from neon_steps.errors import NeonError

NAME = "inception-v3-compat"
LAYER = "2048"  # the pool features FID and precision/recall use
DIM = 2048


def _exists(path: str, field: str) -> Path:
    if not Path(path).is_file():
        raise NeonError(f"{field}: {path}: no such file")
    return Path(path)


def check_weights(path: str, field: str) -> None:
    """torch-fidelity reads the weights with torch.load(weights_only=False), which can run code:
    accept only a file that loads as plain tensors (weights_only=True) first."""
    _exists(path, field)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # a pickle that needs code, a truncated file, not a torch file
        raise NeonError(f"{field}: {path}: not a plain state dict of Inception-v3 weights "
                        f"({type(err).__name__}: {str(err).splitlines()[0][:120]})") from None
    if not (isinstance(state, Mapping) and "fc.weight" in state and tuple(state["fc.weight"].shape) == (1008, DIM)):
        raise NeonError(f"{field}: {path}: not torch-fidelity's Inception-v3 weights (no fc.weight of shape 1008x2048)")


def extract(images: torch.Tensor, weights: str, field: str = "inception_weights",
            batch_size: int = 100) -> torch.Tensor:
    """Inception pool features [N, 2048] (float64) of uint8 images [N, C, H, W] of any size
    (torch-fidelity resizes to 299 as TensorFlow did); one channel is repeated to three."""
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"{NAME}: expected uint8 images [N,1|3,H,W], got {images.dtype} {tuple(images.shape)}")
    check_weights(weights, field)
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    return extraction.extract(NAME, LAYER, images, weights, batch_size, cuda=torch.cuda.is_available())


def read_npz(path: str, field: str) -> dict[str, np.ndarray]:
    """An .npz's arrays (no pickled objects)."""
    _exists(path, field)
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
    except Exception as err:
        raise NeonError(f"{field}: {path}: not a readable .npz ({type(err).__name__}: {err})") from None


def images_nchw(array: np.ndarray, path: str, field: str) -> torch.Tensor:
    """ADM's arr_0 (and any N x H x W x C uint8 batch) as N x C x H x W."""
    if array.dtype != np.uint8 or array.ndim != 4 or array.shape[-1] not in (1, 3):
        raise NeonError(f"{field}: {path}: arr_0 must be uint8 images N x H x W x 3, got {array.dtype} {array.shape}")
    return torch.from_numpy(array).permute(0, 3, 1, 2).contiguous()


def reference(dataset: Mapping[str, Any], where: str) -> dict[str, torch.Tensor]:
    """mu and sigma from `statistics`; real features for precision/recall from `real` (features or
    arr_0 images) or from the statistics file's own arr_0 (ADM); without either, none."""
    # Every evaluation reads the weights; checked here, in the job all of them wait for, a bad file
    # stops the run before any evaluation (whose previous results Snakemake would delete first).
    check_weights(dataset["inception_weights"], f"{where}.inception_weights")
    field = f"{where}.statistics"
    stats = read_npz(dataset["statistics"], field)
    for key in ("mu", "sigma"):
        if key not in stats:
            raise NeonError(f"{field}: {dataset['statistics']}: no {key!r} array (has: {', '.join(stats) or 'none'})")
    mu, sigma = stats["mu"], stats["sigma"]
    if mu.shape != (DIM,) or sigma.shape != (DIM, DIM):
        raise NeonError(f"{field}: {dataset['statistics']}: mu {mu.shape} and sigma {sigma.shape} are not "
                        f"Inception pool statistics ({DIM} and {DIM}x{DIM})")
    ref = {"mu": torch.from_numpy(mu.astype(np.float64)), "sigma": torch.from_numpy(sigma.astype(np.float64))}
    source, path, field_real = stats, dataset["statistics"], field
    if dataset.get("real"):
        field_real = f"{where}.real"
        source, path = read_npz(dataset["real"], field_real), dataset["real"]
        if "features" not in source and "arr_0" not in source:
            raise NeonError(f"{field_real}: {path}: no 'features' or 'arr_0' array "
                            f"(has: {', '.join(source) or 'none'})")
    if "features" in source:
        feats = source["features"]
        if feats.ndim != 2 or feats.shape[1] != DIM:
            raise NeonError(f"{field_real}: {path}: features must be N x {DIM}, got {feats.shape}")
        ref["features"] = torch.from_numpy(feats.astype(np.float64))
    elif "arr_0" in source:
        images = images_nchw(source["arr_0"], path, field_real)
        ref["features"] = extract(images, dataset["inception_weights"], f"{where}.inception_weights")
    return ref
