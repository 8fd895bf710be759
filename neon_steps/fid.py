"""Stage `fid`: evaluate a merged model at CFG scale γ — FID, precision and recall (k=5). One
function per rule: `evaluate` (evaluate_point, evaluate_noise_seed), `evaluate_line`,
`evaluate_final`.

Every (w, γ) point of a model draws with the same seed and labels (common random numbers), so
differences between points are differences between models, not between draws. A point is one
job (`evaluate_point`, after its `merge`), or, for models whose evaluation takes less time than a job takes
to start (`evaluate.jobs: per_line`), every w of one (|S|, B, γ) is one job (`evaluate_line`), merged
in memory by the merge stage's arithmetic."""

import shutil
import sys
import time
from typing import Any, Mapping, Sequence

import torch

from neon_steps import metrics
from neon_steps.device import default_device
from neon_steps.errors import NeonError
from neon_steps.extrapolation import merge_state_dicts
from neon_steps.io import file_identity, fingerprint, load_metadata, load_tensors, save_tensors, write_json
from neon_steps.models import load_adapter
from neon_steps.sampling import balanced_labels, draw
from neon_steps.seeding import derive_seed


def evaluation_kappa(model: Mapping[str, Any], gamma: float) -> dict:
    kappa = dict(model["evaluate"]["kappa"])
    if model.get("guidance", False):
        kappa["cfg"] = gamma
    return kappa


PREVIEW = 100  # samples kept beside the metrics (the aggregate's figure of generated digits)


def evaluate(model: Mapping[str, Any], weights: str, reference: str, point: Mapping[str, float], out: str,
             extractor: str | None = None, preview: str | None = None, features: str | None = None) -> None:
    """`extractor`: the feature extractor's weights where the data set has one (digits);
    `preview`: where to save the first 100 samples (and labels), or None; `features`: where to
    save the samples' features (a final evaluation at this point starts from them), or None."""
    settings = model["evaluate"]
    start = time.time()
    adapter = load_adapter(model, device=default_device()).load(weights)
    kappa = evaluation_kappa(model, point["gamma"])
    n = settings["n"]
    labels = balanced_labels(n, adapter.num_classes, settings["seed"]) if adapter.conditional else None
    shards = f"{out}.shards"  # finished shards survive a killed job
    samples = draw(adapter, n, settings["seed"], kappa, settings["shard_size"], labels, desc="evaluation",
                   resume_dir=shards, fingerprint=fingerprint([file_identity(weights), settings, kappa]))
    if preview:
        kept = {"samples": samples[:PREVIEW], **({} if labels is None else {"labels": labels[:PREVIEW]})}
        save_tensors(preview, kept, {"model": model["name"], **point})
    feats = features_of(model, samples, extractor)
    if features:
        # The extractors compute in float32 (cast to float64 for the statistics): stored as float32
        # where that is exact, half the bytes (10k Inception features: 82 MB, not 164).
        single = feats.float()
        save_tensors(features, {"features": single if torch.equal(single.double(), feats) else feats},
                     {"model": model["name"], **point, "n": n, "seed": settings["seed"],
                      "shard_size": settings["shard_size"]})
    write_metrics(out, model, adapter, point, feats, reference, start, nfe=adapter.nfe(kappa))


def evaluate_line(model: Mapping[str, Any], base: str, selftrained: str, reference: str,
                  point: Mapping[str, float], ws: Sequence[float], out: str, extractor: str | None = None) -> None:
    """Every w of `ws` at one (|S|, B, γ) in one process: θ_neon merged in memory, as `merge`
    would write it, then drawn and scored exactly as `evaluate` does (same seed, same labels), so
    each record equals that point's own metrics file. `out`: a JSON list of the records."""
    settings = model["evaluate"]
    adapter = load_adapter(model, device=default_device())
    base_weights, selftrained_weights = load_tensors(base), load_tensors(selftrained)
    kappa = evaluation_kappa(model, point["gamma"])
    n = settings["n"]
    labels = balanced_labels(n, adapter.num_classes, settings["seed"]) if adapter.conditional else None
    records = []
    for w in ws:
        start = time.time()
        adapter.load_state_dict(merge_state_dicts(base_weights, selftrained_weights, w,
                                                  keep_base=lambda name: not adapter.mergeable(name)))
        samples = draw(adapter, n, settings["seed"], kappa, settings["shard_size"], labels, desc=f"evaluation w={w:g}")
        records.append(metrics_record(model, adapter, {**point, "w": w}, features_of(model, samples, extractor),
                                      reference, start, nfe=adapter.nfe(kappa)))
        print(f"w={w:g}: FID {records[-1]['fid']:.6g}", file=sys.stderr)
    write_json(out, records)


def features_of(model: Mapping[str, Any], samples, extractor: str | None):
    where = f"datasets.{model.get('dataset', '<dataset>')}"
    return metrics.features(model["dataset_spec"], samples, extractor, where=where)


def write_metrics(out: str, model: Mapping[str, Any], adapter, point: Mapping[str, float], feats, reference: str,
                  start: float, **extra) -> None:
    """Score the features and write the metrics JSON; the finished job's shards go."""
    write_json(out, metrics_record(model, adapter, point, feats, reference, start, **extra))
    shutil.rmtree(f"{out}.shards")


def metrics_record(model: Mapping[str, Any], adapter, point: Mapping[str, float], feats, reference: str,
                   start: float, **extra) -> dict:
    settings = model["evaluate"]
    return {"model": model["name"], "family": adapter.family, **point, **scored(feats, reference, settings),
            "n": len(feats), **extra, "seconds": round(time.time() - start, 3), "seed": settings["seed"]}


def scored(feats, reference: str, settings: Mapping[str, Any]) -> dict:
    """FID on every sample; precision/recall (O(n²)) on the first prc_n, where the reference has
    real features (an Inception reference of mu and sigma alone gives FID only)."""
    ref = load_tensors(reference)
    if "features" not in ref:
        return {"fid": metrics.fid(feats, ref), "precision": None, "recall": None, "prc_n": 0}
    prc_n = min(len(feats), settings["prc_n"])
    return {"fid": metrics.fid(feats, ref), **metrics.precision_recall(feats[:prc_n], ref), "prc_n": prc_n}


def final_labels(n_search: int, n_final: int, num_classes: int, seed: int) -> torch.Tensor:
    """The labels of the samples a final evaluation adds after the search's: balanced on their
    own, so the whole list stays balanced (up to one per class per part)."""
    return balanced_labels(n_final - n_search, num_classes, derive_seed(seed, "final"))


def evaluate_final(model: Mapping[str, Any], weights: str, reference: str, point: Mapping[str, float],
                   n_final: int, search_features: str, out: str, extractor: str | None = None) -> None:
    """FID at `n_final` samples: the search's samples at this point are the first shards of the
    draw (same seed, same shard seeds), so their stored features are reused and only shards from
    there on are sampled."""
    settings = model["evaluate"]
    start = time.time()
    reused = load_tensors(search_features)["features"].double()
    meta = load_metadata(search_features)
    if int(meta["seed"]) != settings["seed"] or int(meta["shard_size"]) != settings["shard_size"]:
        raise NeonError(f"{search_features}: drawn with another seed or shard size than evaluate's; "
                              f"rerun its evaluate_point job")
    n_search = len(reused)
    if n_search % settings["shard_size"] or n_final <= n_search:
        raise NeonError(f"evaluate.search.final_n: {n_final} samples cannot extend the search's {n_search} "
                              f"in shards of {settings['shard_size']}")
    adapter = load_adapter(model, device=default_device()).load(weights)
    kappa = evaluation_kappa(model, point["gamma"])
    labels = (final_labels(n_search, n_final, adapter.num_classes, settings["seed"]) if adapter.conditional else None)
    print(f"final evaluation: {n_search} samples' features reused from the search, sampling {n_final - n_search}",
          file=sys.stderr)
    samples = draw(adapter, n_final - n_search, settings["seed"], kappa, settings["shard_size"], labels,
                   desc="final evaluation", resume_dir=f"{out}.shards", first_shard=n_search // settings["shard_size"],
                   fingerprint=fingerprint([file_identity(weights), settings, kappa, n_search]))
    feats = torch.cat([reused, features_of(model, samples, extractor)])
    write_metrics(out, model, adapter, point, feats, reference, start,
                  n_reused=n_search, n_sampled=len(samples), nfe=adapter.nfe(kappa))
