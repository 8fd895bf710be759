"""Stage `fid`: evaluate a merged model at CFG scale γ — FID, precision and recall (k=5). One
function per rule: `evaluate` (evaluate_point, evaluate_noise_seed), `evaluate_part` (their part
jobs and the final evaluation's), `evaluate_line`, `evaluate_final`.

Every (w, γ) point of a model draws with the same seed and labels (common random numbers), so
differences between points are differences between models, not between draws. A point is one
job (`evaluate_point`, after its `merge`), or, for models whose evaluation takes less time than a job takes
to start (`evaluate.jobs: per_line`), every w of one (|S|, B, γ) is one job (`evaluate_line`), merged
in memory by the merge stage's arithmetic.

A point's draw is a sequence of rows in shards of `evaluate.shard_size`, shard i drawn from its own
seed (seed, i): rows [0, n) are the search's, rows [n, final_n) the final evaluation's. Every path
extracts features shard by shard as the shards are drawn, so a job holds one shard of images
whatever n, and an evaluation drawn by several part jobs (`evaluate.images_per_job`: a contiguous
range of shards each, writing features) and scored by one light job gives the features, and so the
FID, precision and recall, that one job gives."""

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
from neon_steps.sampling import balanced_labels, draw_shards
from neon_steps.seeding import derive_seed


def evaluation_kappa(model: Mapping[str, Any], gamma: float) -> dict:
    kappa = dict(model["evaluate"]["kappa"])
    if model.get("guidance", False):
        kappa["cfg"] = gamma
    return kappa


PREVIEW = 100  # samples kept beside the metrics (the aggregate's figure of generated digits)


# -- the draw, shard by shard -----------------------------------------------------------------------
def draw_labels(adapter, settings: Mapping[str, Any], rows: range, n_final: int | None = None):
    """The labels of `rows` of a point's draw (None for an unconditional model): the search's n
    rows take balanced_labels(n), the rows after them (a final evaluation's) final_labels, so the
    whole list stays balanced."""
    if not adapter.conditional:
        return None
    n, seed, classes = settings["n"], settings["seed"], adapter.num_classes
    pieces = []
    if rows.start < n:
        pieces.append(balanced_labels(n, classes, seed)[rows.start:min(rows.stop, n)])
    if rows.stop > n:
        if n_final is None:
            raise NeonError(f"rows {rows.start}..{rows.stop} of the draw: past evaluate.n ({n}), but no final_n")
        pieces.append(final_labels(n, n_final, classes, seed)[max(rows.start, n) - n:rows.stop - n])
    return torch.cat(pieces)


def draw_features(model: Mapping[str, Any], adapter, kappa: Mapping[str, Any], rows: range, labels,
                  extractor: str | None, desc: str, keep: int = 0, **store) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The features of `rows` of the draw (whole shards: `rows.start` is a shard's first row),
    extracted shard by shard as each is drawn: a job holds one shard of images at a time, and the
    extractor sees the same batches whichever job draws a shard. With `keep`, also the first
    `keep` samples (a preview). `store`: draw_shards' resume_dir and fingerprint."""
    settings = model["evaluate"]
    shard = settings["shard_size"]
    if rows.start % shard:
        raise NeonError(f"rows {rows.start}..{rows.stop}: a part of the draw starts at a shard, a multiple of "
                        f"evaluate.shard_size ({shard})")
    feats, kept, count = [], [], 0
    for samples in draw_shards(adapter, len(rows), settings["seed"], kappa, shard, labels, desc,
                               first_shard=rows.start // shard, **store):
        if count < keep:
            kept.append(samples[:keep - count].clone())  # not a view: the shard itself goes
            count += len(kept[-1])
        feats.append(features_of(model, samples, extractor))
    return torch.cat(feats), (torch.cat(kept) if kept else None)


def features_of(model: Mapping[str, Any], samples, extractor: str | None):
    where = f"datasets.{model.get('dataset', '<dataset>')}"
    return metrics.features(model["dataset_spec"], samples, extractor, where=where)


def compact(feats: torch.Tensor) -> torch.Tensor:
    """The extractors compute in float32 (cast to float64 for the statistics): stored as float32
    where that is exact, half the bytes (10k Inception features: 82 MB, not 164)."""
    single = feats.float()
    return single if torch.equal(single.double(), feats) else feats


# -- one job, or part jobs and a scoring job ------------------------------------------------------
def evaluate(model: Mapping[str, Any], weights: str | None, reference: str, point: Mapping[str, float], out: str,
             extractor: str | None = None, preview: str | None = None, features: str | None = None,
             parts: Sequence[str] = ()) -> None:
    """`extractor`: the feature extractor's weights where the data set has one (digits);
    `preview`: where to save the first 100 samples (and labels), or None; `features`: where to
    save the samples' features (a final evaluation at this point starts from them), or None.
    `parts`: the part jobs' files of a fanned-out evaluation (evaluate_part): they are scored,
    nothing is drawn and `weights` is not read."""
    if parts:
        return score_parts(model, reference, point, parts, out, preview, features)
    settings = model["evaluate"]
    start = time.time()
    adapter = load_adapter(model, device=default_device()).load(weights)
    kappa = evaluation_kappa(model, point["gamma"])
    rows = range(settings["n"])
    labels = draw_labels(adapter, settings, rows)
    shards = f"{out}.shards"  # finished shards survive a killed job
    feats, kept = draw_features(model, adapter, kappa, rows, labels, extractor, "evaluation",
                                keep=PREVIEW if preview else 0, resume_dir=shards,
                                fingerprint=fingerprint([file_identity(weights), settings, kappa]))
    if preview:
        save_preview(preview, model, point, kept, None if labels is None else labels[:PREVIEW])
    if features:
        save_features(features, model, point, feats)
    write_json(out, metrics_record(model, adapter.family, point, feats, reference, start, nfe=adapter.nfe(kappa)))
    shutil.rmtree(shards)


def evaluate_part(model: Mapping[str, Any], weights: str, point: Mapping[str, float], rows: Sequence[int], out: str,
                  extractor: str | None = None, n_final: int | None = None, preview: bool = False) -> None:
    """Rows [rows[0], rows[1]) of a point's draw, one part job of a fanned-out evaluation: their
    features, saved to `out` with what the scoring job needs (family, nfe, the rows) and, with
    `preview`, those of the first 100 samples (and labels) of the draw that fall in the part.
    `n_final`: the final evaluation's sample count, for rows past evaluate.n."""
    settings = model["evaluate"]
    start = time.time()
    rows = range(*rows)
    adapter = load_adapter(model, device=default_device()).load(weights)
    kappa = evaluation_kappa(model, point["gamma"])
    labels = draw_labels(adapter, settings, rows, n_final)
    shards = f"{out}.shards"
    keep = max(0, min(PREVIEW, rows.stop) - rows.start) if preview else 0
    feats, kept = draw_features(model, adapter, kappa, rows, labels, extractor,
                                f"evaluation rows {rows.start}-{rows.stop}", keep=keep, resume_dir=shards,
                                fingerprint=fingerprint([file_identity(weights), settings, kappa, rows.start,
                                                         rows.stop, n_final]))
    tensors = {"features": compact(feats)}
    if keep:
        tensors["samples"] = kept
        if labels is not None:
            tensors["labels"] = labels[:keep]
    save_tensors(out, tensors, {"model": model["name"], **point, "first": rows.start, "n": len(rows),
                                "seed": settings["seed"], "shard_size": settings["shard_size"],
                                "family": adapter.family, "nfe": adapter.nfe(kappa),
                                "seconds": round(time.time() - start, 3)})
    shutil.rmtree(shards)


def gathered(parts: Sequence[str], settings: Mapping[str, Any], first: int) -> tuple[torch.Tensor, list[dict]]:
    """The features of the part files in row order (float64), checked to be consecutive parts of
    this evaluation's draw from row `first` on, and the parts' metadata."""
    feats, metas = [], []
    for part in parts:
        meta = {k: load_metadata(part)[k] for k in ("first", "n", "seed", "shard_size", "family", "nfe", "seconds")}
        meta = {k: v if k == "family" else float(v) if k == "seconds" else int(v) for k, v in meta.items()}
        if (meta["seed"], meta["shard_size"]) != (settings["seed"], settings["shard_size"]) or meta["first"] != first:
            raise NeonError(f"{part}: not rows {first}.. of this evaluation's draw (seed {settings['seed']}, "
                            f"shards of {settings['shard_size']}); rerun its part job")
        feats.append(load_tensors(part)["features"].double())
        if len(feats[-1]) != meta["n"]:
            raise NeonError(f"{part}: {len(feats[-1])} features, its header says {meta['n']}; rerun its part job")
        metas.append(meta)
        first += meta["n"]
    return torch.cat(feats), metas


def score_parts(model: Mapping[str, Any], reference: str, point: Mapping[str, float], parts: Sequence[str], out: str,
                preview: str | None = None, features: str | None = None) -> None:
    """The scoring job of a fanned-out evaluation: the parts' features in row order, scored as one
    evaluation of all of them; its preview, features and metrics are the one-job evaluation's."""
    settings = model["evaluate"]
    start = time.time()
    feats, metas = gathered(parts, settings, first=0)
    if len(feats) != settings["n"]:
        raise NeonError(f"{len(parts)} parts hold {len(feats)} samples, not evaluate.n ({settings['n']}); rerun them")
    if preview:
        kept = [load_tensors(part) for part, meta in zip(parts, metas) if meta["first"] < PREVIEW]
        labels = [t["labels"] for t in kept if "labels" in t]
        save_preview(preview, model, point, torch.cat([t["samples"] for t in kept]),
                     torch.cat(labels) if labels else None)
    if features:
        save_features(features, model, point, feats)
    # seconds: the parts' sampling and extraction with this job's scoring, as one job's would be
    write_json(out, metrics_record(model, metas[0]["family"], point, feats, reference,
                                   start - sum(m["seconds"] for m in metas), nfe=metas[0]["nfe"]))


def save_preview(path: str, model: Mapping[str, Any], point: Mapping[str, float], samples, labels) -> None:
    kept = {"samples": samples, **({} if labels is None else {"labels": labels})}
    save_tensors(path, kept, {"model": model["name"], **point})


def save_features(path: str, model: Mapping[str, Any], point: Mapping[str, float], feats) -> None:
    settings = model["evaluate"]
    save_tensors(path, {"features": compact(feats)},
                 {"model": model["name"], **point, "n": len(feats), "seed": settings["seed"],
                  "shard_size": settings["shard_size"]})


def evaluate_line(model: Mapping[str, Any], base: str, selftrained: str, reference: str,
                  point: Mapping[str, float], ws: Sequence[float], out: str, extractor: str | None = None) -> None:
    """Every w of `ws` at one (|S|, B, γ) in one process: θ_neon merged in memory, as `merge`
    would write it, then drawn and scored exactly as `evaluate` does (same seed, same labels), so
    each record equals that point's own metrics file. `out`: a JSON list of the records."""
    settings = model["evaluate"]
    adapter = load_adapter(model, device=default_device())
    base_weights, selftrained_weights = load_tensors(base), load_tensors(selftrained)
    kappa = evaluation_kappa(model, point["gamma"])
    rows = range(settings["n"])
    labels = draw_labels(adapter, settings, rows)
    records = []
    for w in ws:
        start = time.time()
        adapter.load_state_dict(merge_state_dicts(base_weights, selftrained_weights, w,
                                                  keep_base=lambda name: not adapter.mergeable(name)))
        feats, _ = draw_features(model, adapter, kappa, rows, labels, extractor, f"evaluation w={w:g}")
        records.append(metrics_record(model, adapter.family, {**point, "w": w}, feats, reference, start,
                                      nfe=adapter.nfe(kappa)))
        print(f"w={w:g}: FID {records[-1]['fid']:.6g}", file=sys.stderr)
    write_json(out, records)


def metrics_record(model: Mapping[str, Any], family: str, point: Mapping[str, float], feats, reference: str,
                   start: float, **extra) -> dict:
    settings = model["evaluate"]
    return {"model": model["name"], "family": family, **point, **scored(feats, reference, settings),
            "n": len(feats), **extra, "seconds": round(time.time() - start, 3), "seed": settings["seed"]}


def scored(feats, reference: str, settings: Mapping[str, Any]) -> dict:
    """FID on every sample; precision/recall (O(n²)) on the first prc_n, where the reference has
    real features (an Inception reference of mu and sigma alone gives FID only)."""
    ref = load_tensors(reference)
    if "features" not in ref:
        return {"fid": metrics.fid(feats, ref), "precision": None, "recall": None, "prc_n": 0}
    prc_n = min(len(feats), settings["prc_n"])
    return {"fid": metrics.fid(feats, ref), **metrics.precision_recall(feats[:prc_n], ref), "prc_n": prc_n}


# -- the final evaluation -------------------------------------------------------------------------
def final_labels(n_search: int, n_final: int, num_classes: int, seed: int) -> torch.Tensor:
    """The labels of the samples a final evaluation adds after the search's: balanced on their
    own, so the whole list stays balanced (up to one per class per part)."""
    return balanced_labels(n_final - n_search, num_classes, derive_seed(seed, "final"))


def evaluate_final(model: Mapping[str, Any], weights: str | None, reference: str, point: Mapping[str, float],
                   n_final: int, search_features: str, out: str, extractor: str | None = None,
                   parts: Sequence[str] = ()) -> None:
    """FID at `n_final` samples: the search's samples at this point are the first shards of the
    draw (same seed, same shard seeds), so their stored features are reused and only shards from
    there on are sampled: here, or by part jobs (evaluate_part) whose `parts` are then scored
    after the search's features, nothing drawn and `weights` not read."""
    settings = model["evaluate"]
    start = time.time()
    reused = load_tensors(search_features)["features"].double()
    meta = load_metadata(search_features)
    n_search = len(reused)
    if (int(meta["seed"]), int(meta["shard_size"]), n_search) != (settings["seed"], settings["shard_size"],
                                                                   settings["n"]):
        raise NeonError(f"{search_features}: drawn with another seed, shard size or n than evaluate's; "
                        f"rerun its evaluate_point job")
    if n_search % settings["shard_size"] or n_final <= n_search:
        raise NeonError(f"evaluate.search.final_n: {n_final} samples cannot extend the search's {n_search} "
                        f"in shards of {settings['shard_size']}")
    print(f"final evaluation: {n_search} samples' features reused from the search, "
          f"{'scoring parts of' if parts else 'sampling'} {n_final - n_search}", file=sys.stderr)
    if parts:
        added, metas = gathered(parts, settings, first=n_search)
        if n_search + len(added) != n_final:
            raise NeonError(f"{len(parts)} parts hold rows {n_search}..{n_search + len(added)}, not ..{n_final} "
                            f"(evaluate.search.final_n); rerun them")
        family, nfe, start = metas[0]["family"], metas[0]["nfe"], start - sum(m["seconds"] for m in metas)
    else:
        adapter = load_adapter(model, device=default_device()).load(weights)
        kappa = evaluation_kappa(model, point["gamma"])
        rows = range(n_search, n_final)
        added, _ = draw_features(model, adapter, kappa, rows, draw_labels(adapter, settings, rows, n_final), extractor,
                                 "final evaluation", resume_dir=f"{out}.shards",
                                 fingerprint=fingerprint([file_identity(weights), settings, kappa, n_search]))
        family, nfe = adapter.family, adapter.nfe(kappa)
    feats = torch.cat([reused, added])
    write_json(out, metrics_record(model, family, point, feats, reference, start,
                                   n_reused=n_search, n_sampled=len(added), nfe=nfe))
    if not parts:
        shutil.rmtree(f"{out}.shards")
