"""FID, precision and recall through torch-fidelity's metric functions, in a feature space chosen
by the data set: the points themselves for the 2-D toy."""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch
from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_features_to_statistics, fid_statistics_to_metric
from torch_fidelity.metric_prc import KEY_METRIC_PRECISION, KEY_METRIC_RECALL, prc_features_to_metric

from neon_steps import data

PRC_NEIGHBORHOOD = 5  # the paper's k for precision and recall


def features(dataset: Mapping[str, Any], samples: torch.Tensor) -> torch.Tensor:
    """Samples in the data set's feature space."""
    if dataset["kind"] == "gaussian2d":
        return samples.double()
    raise ValueError(f"datasets: no feature space for kind {dataset['kind']!r}")


def reference(dataset: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Reference statistics (mu, sigma) and real features for precision/recall."""
    ref = dataset["reference"]
    if dataset["kind"] == "gaussian2d":
        # FID against the true Gaussian itself; precision/recall need real samples.
        real = data.gaussian2d(dataset, ref["n"], ref["seed"])
        return {"mu": torch.tensor(dataset["mean"], dtype=torch.float64),
                "sigma": torch.tensor(dataset["cov"], dtype=torch.float64),
                "features": features(dataset, real)}
    raise ValueError(f"datasets: no reference for kind {dataset['kind']!r}")


def score(generated: torch.Tensor, ref: Mapping[str, torch.Tensor], prc: bool = True) -> dict[str, float]:
    """FID of generated features against the reference statistics, and precision/recall at k=5
    against the reference features."""
    stats = fid_features_to_statistics(generated.double().cpu())
    ref_stats = {"mu": ref["mu"].double().numpy(), "sigma": ref["sigma"].double().numpy()}
    fid = fid_statistics_to_metric({k: np.asarray(v, np.float64) for k, v in stats.items()}, ref_stats, False)
    out = {"fid": float(fid[KEY_METRIC_FID])}
    if prc:
        pr = prc_features_to_metric(generated.float().cpu(), ref["features"].float().cpu(),
                                    prc_neighborhood=PRC_NEIGHBORHOOD, prc_batch_size=10000,
                                    save_cpu_ram=True, verbose=False)
        out.update(precision=float(pr[KEY_METRIC_PRECISION]), recall=float(pr[KEY_METRIC_RECALL]))
    return out
