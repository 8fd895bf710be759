"""Stage `reference`: a data set's reference statistics and real features, computed once and kept
as a workflow artifact (not in torch-fidelity's name-keyed cache, which goes stale silently)."""

import argparse
import sys

from neon_steps import metrics, stage
from neon_steps.io import save_tensors


def build_reference(name: str, dataset: dict, out: str, data_path: str | None = None,
                    extractor: str | None = None) -> None:
    """Image data sets need the stored data set and the feature extractor's weights."""
    ref = metrics.reference(dataset, data_path, extractor, where=f"datasets.{name}")
    save_tensors(out, ref, {"dataset": name, "kind": dataset["kind"]})


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default="config.yaml")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--data", default=None, type=stage.existing("safetensors"),
                        help="the stored data set (image data sets)")
    parser.add_argument("--classifier", default=None, type=stage.existing("safetensors"),
                        help="the feature extractor's weights (image data sets)")
    args = parser.parse_args(argv)
    dataset = stage.dataset_from_args(args)
    build_reference(args.dataset, dataset, args.out, args.data, args.classifier)
    return 0


if __name__ == "__main__":
    if "snakemake" in globals():
        smk = snakemake  # noqa: F821
        stage.run_snakemake(smk, lambda: build_reference(smk.wildcards.dataset, smk.params.dataset, smk.output[0],
                                                         smk.input.get("data"), smk.input.get("classifier")))
    else:
        sys.exit(main())
