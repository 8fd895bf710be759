"""The feature space of the digits benchmark: a small CNN classifier trained on the real digits,
registered with torch-fidelity as the feature extractor "neon-digits-cnn".

Its weights are a workflow artifact (the `classifier` rule); torch-fidelity builds the extractor
by name with `feature_extractor_weights_path=<that file>`, as it does for Inception. FID and
precision/recall (k=5) use the 64-d penultimate layer ("pool": the last convolution, linear,
averaged over a 2x2 grid of 2x2 cells, so that it keeps where strokes are, not only which class
they make); "logits" gives class scores. A global average, or a ReLU there, mapped uniform noise
onto the class clusters (precision 0.2 for noise); the 2x2 grid gives noise precision ~0.01.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn
from torch.nn import functional as F
from torch_fidelity import FeatureExtractorBase
from tqdm import tqdm

from neon_steps.io import load_metadata, load_tensors, save_tensors
from neon_steps.metrics import extraction

NAME = "neon-digits-cnn"
FEATURES = ("pool", "logits")
DEFAULTS = {"epochs": 30, "lr": 2.0e-3, "batch_size": 64, "seed": 0, "width": 32, "channels": 16}


class DigitsCNN(nn.Module):
    """8x8 -> conv 3x3 (width), ReLU -> conv 3x3 (2·width), ReLU, max-pool to 4x4 -> conv 3x3
    (channels) -> average over 2x2 cells, flattened: 4·channels features ("pool") -> linear
    ("logits")."""

    def __init__(self, width: int = 32, channels: int = 16, classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.conv3 = nn.Conv2d(2 * width, channels, 3, padding=1)
        self.head = nn.Linear(4 * channels, classes)

    @staticmethod
    def normalize(images: torch.Tensor) -> torch.Tensor:
        """uint8 0..255 -> float in [-1, 1]."""
        return images.float() / 127.5 - 1

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = F.relu(self.conv1(self.normalize(images)))
        h = F.max_pool2d(F.relu(self.conv2(h)), 2)
        pool = F.avg_pool2d(self.conv3(h), 2).flatten(1)
        return pool, self.head(pool)


def build(settings: Mapping[str, Any]) -> DigitsCNN:
    s = {**DEFAULTS, **settings}
    return DigitsCNN(int(s["width"]), int(s["channels"]))


def train_classifier(images: torch.Tensor, labels: torch.Tensor, settings: Mapping[str, Any]) -> DigitsCNN:
    """Adam on cross-entropy, `epochs` passes in a seeded order, with random shifts of up to one
    pixel (so the features do not hinge on exact pixel positions). Deterministic for a given
    seed and thread count."""
    s = {**DEFAULTS, **settings}
    torch.manual_seed(int(s["seed"]))
    net = build(s)
    opt = torch.optim.Adam(net.parameters(), lr=float(s["lr"]))
    gen = torch.Generator().manual_seed(int(s["seed"]) + 1)
    batch = int(s["batch_size"])
    net.train()
    for epoch in tqdm(range(int(s["epochs"])), desc="classifier", unit="epoch", mininterval=5):
        order = torch.randperm(len(images), generator=gen)
        for start in range(0, len(images), batch):
            rows = order[start:start + batch]
            x = shift(images[rows], gen)
            loss = F.cross_entropy(net(x)[1], labels[rows])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    net.eval()
    return net


def shift(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Each image moved by -1, 0 or +1 pixels in each direction (zero-filled), drawn from `gen`."""
    padded = F.pad(images, (1, 1, 1, 1))
    dy, dx = torch.randint(0, 3, (2, len(images)), generator=gen)
    rows = (dy[:, None] + torch.arange(8))[:, :, None]
    cols = (dx[:, None] + torch.arange(8))[:, None, :]
    return padded[torch.arange(len(images))[:, None, None], 0, rows, cols][:, None]


@torch.no_grad()
def accuracy(net: DigitsCNN, images: torch.Tensor, labels: torch.Tensor) -> float:
    return (net(images)[1].argmax(1) == labels).float().mean().item()


def save(net: DigitsCNN, path, settings: Mapping[str, Any], metadata: Mapping[str, Any] | None = None) -> None:
    save_tensors(path, net.state_dict(), {"extractor": NAME, "settings": {**DEFAULTS, **settings}, **(metadata or {})})


def load(path) -> DigitsCNN:
    import json

    meta = load_metadata(path)
    net = build(json.loads(meta.get("settings", "{}")))
    net.load_state_dict(load_tensors(path))
    return net.eval()


class DigitsFeatureExtractor(FeatureExtractorBase):
    """torch-fidelity's view of the classifier: uint8 [N,1,8,8] in, ("pool", "logits") out."""

    def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
        super().__init__(name, features_list)
        if feature_extractor_weights_path is None:
            raise ValueError(f"{NAME}: pass feature_extractor_weights_path (the train_classifier rule's output)")
        self.net = load(feature_extractor_weights_path)

    @staticmethod
    def get_provided_features_list():
        return FEATURES

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return {"fid": "pool", "kid": "pool", "prc": "pool", "isc": "logits"}[metric]

    @staticmethod
    def can_be_compiled():
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        return torch.zeros(1, 1, 8, 8, dtype=torch.uint8)

    def forward(self, x):
        if x.dtype != torch.uint8 or x.dim() != 4 or x.shape[1:] != (1, 8, 8):
            raise ValueError(f"{NAME}: expected uint8 images [N,1,8,8], got {x.dtype} {tuple(x.shape)}")
        pool, logits = self.net(x)
        by_name = {"pool": pool, "logits": logits}
        return tuple(by_name[f] for f in self.features_list)


def register() -> None:
    """Register the extractor with torch-fidelity once per process (a second registration of a
    name raises there)."""
    import torch_fidelity
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

    if NAME not in FEATURE_EXTRACTORS_REGISTRY:
        torch_fidelity.register_feature_extractor(NAME, DigitsFeatureExtractor)


def extract(images: torch.Tensor, weights_path, layer: str = "pool", batch_size: int = 500) -> torch.Tensor:
    """Features of uint8 images [N,1,8,8], extracted by torch-fidelity with the registered
    extractor (progress bar on stderr)."""
    register()
    if images.dtype != torch.uint8:
        raise ValueError(f"{NAME}: expected uint8 images, got {images.dtype}")
    return extraction.extract(NAME, layer, images, weights_path, batch_size)
