"""Stage `ckpt`: θ_s at budget B — the weights of a fine-tune state, without the optimizer, in the
base's layout, so the merge compares like with like."""

import argparse
import sys

from neon_steps import stage
from neon_steps.io import load_metadata, save_tensors
from neon_steps.training import weights_from_state


def extract_weights(state: str, out: str) -> None:
    meta = load_metadata(state)
    save_tensors(out, weights_from_state(state),
                 {k: meta[k] for k in ("model", "images_seen", "budget_mi", "step") if k in meta})


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("state", help="a fine-tune state (.state.safetensors)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    extract_weights(args.state, args.out)
    return 0


if __name__ == "__main__":
    if "snakemake" in globals():
        smk = snakemake  # noqa: F821
        stage.run_snakemake(smk, lambda: extract_weights(smk.input[0], smk.output[0]))
    else:
        sys.exit(main())
