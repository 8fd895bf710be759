"""FID, precision and recall through torch-fidelity's metric functions, in a feature space chosen
by the data set: the points themselves for the 2-D toy; for the digits, the features of a small
CNN classifier registered with torch-fidelity (metrics/digits.py), extracted by torch-fidelity;
for real image data sets, Inception-v3 from a local weights file (metrics/inception.py)."""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch
from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_features_to_statistics, fid_statistics_to_metric
from torch_fidelity.metric_prc import KEY_METRIC_PRECISION, KEY_METRIC_RECALL, prc_features_to_metric

from neon_steps import data
from neon_steps.errors import ConfigError

PRC_NEIGHBORHOOD = 5  # the paper's k for precision and recall


def features(dataset: Mapping[str, Any], samples: torch.Tensor, extractor=None,
             where: str = "datasets") -> torch.Tensor:
    """Samples in the data set's feature space; `extractor` is the feature extractor's weights
    file where the data set has one (digits: the `classifier` rule's output; inception: the
    config's `inception_weights`, which `where` — datasets.<name> — names in errors)."""
    if dataset["kind"] == "inception":
        from neon_steps.metrics import inception

        return inception.extract(samples, dataset["inception_weights"], f"{where}.inception_weights")
    if dataset["kind"] == "gaussian2d":
        return samples.double()
    if dataset["kind"] == "digits":
        from neon_steps.metrics import digits

        if extractor is None:
            raise ConfigError("datasets: digits features need the classifier's weights (extractor=...)")
        return digits.extract(samples, extractor)
    raise ConfigError(f"datasets: no feature space for kind {dataset['kind']!r}")


def reference(dataset: Mapping[str, Any], data_path=None, extractor=None,
              where: str = "datasets") -> dict[str, torch.Tensor]:
    """Reference statistics (mu, sigma) and real features for precision/recall. Image data sets
    read their stored artifact `data_path`: the reference is the train split (what the models
    learn from), and the held-out split's features are kept beside it for sanity checks."""
    ref = dataset.get("reference", {})
    if dataset["kind"] == "inception":
        from neon_steps.metrics import inception

        return inception.reference(dataset, where)
    if dataset["kind"] == "digits":
        train, _ = data.load_split(data_path, "train")
        heldout, _ = data.load_split(data_path, "heldout")
        feats = features(dataset, train, extractor)
        stats = fid_features_to_statistics(feats)
        return {"mu": torch.as_tensor(stats["mu"], dtype=torch.float64),
                "sigma": torch.as_tensor(stats["sigma"], dtype=torch.float64),
                "features": feats, "heldout_features": features(dataset, heldout, extractor)}
    if dataset["kind"] == "gaussian2d":
        # FID against the true Gaussian itself; precision/recall need real samples.
        real = data.gaussian2d(dataset, ref["n"], ref["seed"])
        return {"mu": torch.tensor(dataset["mean"], dtype=torch.float64),
                "sigma": torch.tensor(dataset["cov"], dtype=torch.float64),
                "features": features(dataset, real)}
    raise ConfigError(f"datasets: no reference for kind {dataset['kind']!r}")


def fid(generated: torch.Tensor, ref: Mapping[str, torch.Tensor]) -> float:
    """FID of generated features against the reference statistics."""
    stats = fid_features_to_statistics(generated.double().cpu())
    ref_stats = {"mu": ref["mu"].double().numpy(), "sigma": ref["sigma"].double().numpy()}
    value = fid_statistics_to_metric({k: np.asarray(v, np.float64) for k, v in stats.items()}, ref_stats, False)
    return float(value[KEY_METRIC_FID])


def precision_recall(generated: torch.Tensor, ref: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """Precision and recall at k=5 against the reference's real features."""
    pr = prc_features_to_metric(generated.float().cpu(), ref["features"].float().cpu(),
                                prc_neighborhood=PRC_NEIGHBORHOOD, prc_batch_size=10000,
                                save_cpu_ram=True, verbose=False)
    return {"precision": float(pr[KEY_METRIC_PRECISION]), "recall": float(pr[KEY_METRIC_RECALL])}


def score(generated: torch.Tensor, ref: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """FID, precision and recall of generated features."""
    return {"fid": fid(generated, ref), **precision_recall(generated, ref)}
