"""Real data that ships with the workflow: nothing is downloaded."""
from __future__ import annotations

from typing import Any, Mapping

import torch


def gaussian2d(spec: Mapping[str, Any], n: int, seed: int) -> torch.Tensor:
    """`n` points from N(mean, cov), the 2-D toy's target."""
    mean = torch.tensor(spec["mean"], dtype=torch.float64)
    chol = torch.linalg.cholesky(torch.tensor(spec["cov"], dtype=torch.float64))
    z = torch.randn((n, len(mean)), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return (mean + z @ chol.T).float()


def real_training_set(dataset: Mapping[str, Any], settings: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The real samples a base model is trained on, and their labels (None if unconditional)."""
    if dataset["kind"] == "gaussian2d":
        return gaussian2d(dataset, settings["n_real"], settings["data_seed"]), None
    raise ValueError(f"datasets: unknown kind {dataset['kind']!r}")
