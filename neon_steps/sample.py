"""Stage `sample`: draw the synthetic set S of |S| samples from the base model with its usual
sampler κ (class-balanced labels for conditional models)."""

import shutil
import sys
from typing import Any, Mapping

from neon_steps import stage
from neon_steps.io import file_identity, fingerprint, save_tensors
from neon_steps.models import load_adapter
from neon_steps.sampling import balanced_labels, draw


def sample_synthetic(model: Mapping[str, Any], size: int, base: str, out: str) -> None:
    settings = model["synthetic"]
    adapter = load_adapter(model, device=stage.device()).load(base)
    labels = (balanced_labels(size, adapter.num_classes, settings["seed"]) if adapter.conditional else None)
    shards = f"{out}.shards"  # finished shards survive a killed job
    samples = draw(adapter, size, settings["seed"], settings["kappa"], settings["shard_size"], labels, desc="S",
                   resume_dir=shards, fingerprint=fingerprint([file_identity(base), settings, size]))
    tensors = {"samples": samples} if labels is None else {"samples": samples, "labels": labels}
    save_tensors(out, tensors, {"model": model["name"], "kappa": settings["kappa"], "seed": settings["seed"]})
    shutil.rmtree(shards)


def main(argv=None) -> int:
    parser = stage.model_parser(__doc__)
    parser.add_argument("--size", type=int, required=True, help="|S|, the number of synthetic samples")
    parser.add_argument("--base", required=True, type=stage.existing("safetensors"),
                        help="base weights (.safetensors)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    model = stage.model_from_args(args)
    with stage.logged(args.log):
        sample_synthetic(model, args.size, args.base, args.out)
    return 0


if __name__ == "__main__":
    if "snakemake" in globals():
        smk = snakemake  # noqa: F821
        stage.run_snakemake(smk, lambda: sample_synthetic(smk.params.model, int(smk.wildcards.S),
                                                          smk.input.base, smk.output[0]))
    else:
        sys.exit(main())
