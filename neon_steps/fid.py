"""Stage `fid`: evaluate a merged model at CFG scale γ — FID, precision and recall (k=5).

Every (w, γ) point of a model draws with the same seed and labels (common random numbers), so
differences between points are differences between models, not between draws."""

import shutil
import sys
import time
from typing import Any, Mapping

from neon_steps import metrics, stage
from neon_steps.io import file_identity, fingerprint, load_tensors, save_tensors, write_json
from neon_steps.models import load_adapter
from neon_steps.sampling import balanced_labels, draw


def evaluation_kappa(model: Mapping[str, Any], gamma: float) -> dict:
    kappa = dict(model["evaluate"]["kappa"])
    if model.get("guidance", False):
        kappa["cfg"] = gamma
    return kappa


PREVIEW = 100  # samples kept beside the metrics (the aggregate's figure of generated digits)


def evaluate(model: Mapping[str, Any], weights: str, reference: str, point: Mapping[str, float], out: str,
             extractor: str | None = None, preview: str | None = None) -> None:
    """`extractor`: the feature extractor's weights where the data set has one (digits);
    `preview`: where to save the first 100 samples (and labels), or None."""
    settings = model["evaluate"]
    start = time.time()
    adapter = load_adapter(model, device=stage.device()).load(weights)
    kappa = evaluation_kappa(model, point["gamma"])
    n = settings["n"]
    labels = balanced_labels(n, adapter.num_classes, settings["seed"]) if adapter.conditional else None
    shards = f"{out}.shards"  # finished shards survive a killed job
    samples = draw(adapter, n, settings["seed"], kappa, settings["shard_size"], labels, desc="evaluation",
                   resume_dir=shards, fingerprint=fingerprint([file_identity(weights), settings, kappa]))
    if preview:
        save_tensors(preview, {"samples": samples[:PREVIEW], **({} if labels is None else {"labels": labels[:PREVIEW]})},
                     {"model": model["name"], **point})
    feats = metrics.features(model["dataset_spec"], samples, extractor, where=f"datasets.{model.get('dataset', '<dataset>')}")
    ref = load_tensors(reference)
    scores = metrics.score(feats, ref, prc=False)
    prc_n = min(n, settings["prc_n"])  # precision/recall is O(n²): scored on the first prc_n samples
    if "features" in ref:  # without real features (an Inception reference of mu and sigma only): FID alone
        scores.update({k: v for k, v in metrics.score(feats[:prc_n], ref).items() if k != "fid"})
    else:
        scores.update(precision=None, recall=None)
    write_json(out, {
        "model": model["name"], "family": adapter.family, **point, **scores,
        "n": n, "prc_n": prc_n, "nfe": adapter.nfe(kappa), "seconds": round(time.time() - start, 3),
        "seed": settings["seed"],
    })
    shutil.rmtree(shards)


def main(argv=None) -> int:
    parser = stage.model_parser(__doc__)
    parser.add_argument("--weights", required=True, help="merged weights (.safetensors)")
    parser.add_argument("--reference", required=True, help="the data set's reference (.safetensors)")
    parser.add_argument("--gamma", type=float, default=1.0)
    parser.add_argument("--out", required=True, help="metrics (.json)")
    parser.add_argument("--classifier", default=None, help="the feature extractor's weights (image data sets)")
    parser.add_argument("--preview", default=None, help="save the first 100 samples here (.safetensors)")
    args = parser.parse_args(argv)
    model = stage.model_from_args(args)
    with stage.logged(args.log):
        evaluate(model, args.weights, args.reference, {"gamma": args.gamma}, args.out, args.classifier, args.preview)
    return 0


if __name__ == "__main__":
    if "snakemake" in globals():
        smk = snakemake  # noqa: F821
        wc = smk.wildcards
        # fid: a merged model at (S, B, w, γ); fid_noise: the base (w = 0) at γ, at another seed
        point = {key: cast(wc[key]) for key, cast in (("S", int), ("B", float), ("w", float), ("gamma", float))
                 if key in wc.keys()}
        point.setdefault("w", 0.0)
        stage.run_snakemake(smk, lambda: evaluate(smk.params.model, smk.input.weights, smk.input.reference,
                                                  point, smk.output[0], smk.input.get("classifier"),
                                                  smk.output.get("preview")))
    else:
        sys.exit(main())
