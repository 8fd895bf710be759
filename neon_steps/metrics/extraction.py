"""Feature extraction through torch-fidelity for images held in memory: what the digits CNN and
Inception-v3 share."""
from __future__ import annotations

import torch
from torch.utils.data import Dataset


class Images(Dataset):
    """Bare uint8 CHW tensors, one per item: the input torch-fidelity accepts from memory."""

    def __init__(self, images: torch.Tensor):
        self.images = images

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i]


def extract(name: str, layer: str, images: torch.Tensor, weights, batch_size: int, cuda: bool = False) -> torch.Tensor:
    """`layer` features (float64, on the CPU) of uint8 images by the registered torch-fidelity
    extractor `name` with its weights file (progress bar on stderr)."""
    from torch_fidelity.utils import create_feature_extractor, get_featuresdict_from_dataset

    extractor = create_feature_extractor(name, [layer], cuda=cuda, verbose=False,
                                         feature_extractor_weights_path=str(weights))
    feats = get_featuresdict_from_dataset(Images(images.contiguous().cpu()), extractor, batch_size, cuda=cuda,
                                          save_cpu_ram=True, verbose=True)
    return feats[layer].double().cpu()
