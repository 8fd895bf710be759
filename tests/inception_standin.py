"""A stand-in for torch-fidelity's Inception-v3 weights file: the same network and state-dict
format (what torch-fidelity's `feature_extractor_weights_path` loads), with random weights."""
from pathlib import Path

import torch
from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3


class _Unloaded(FeatureExtractorInceptionV3):
    """The network with its fresh (random) initialisation: skips loading weights."""

    def load_state_dict(self, state_dict, strict=True, assign=False):
        return None


def write_inception_standin(path: Path, seed: int = 0) -> Path:
    empty = path.with_suffix(".empty.pt")
    torch.save({}, empty)
    torch.manual_seed(seed)
    net = _Unloaded("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(empty))
    empty.unlink()
    torch.save({k: v.contiguous() for k, v in net.state_dict().items()}, path)
    return path
