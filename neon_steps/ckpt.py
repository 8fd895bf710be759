"""Stage `ckpt`: θ_s at budget B — the weights of a fine-tune state, without the optimizer, in the
base's layout, so the merge compares like with like. The tensors' bytes are copied as they are:
no torch import (the job starts in a fraction of a second) and no state held in memory."""

import argparse
import sys

from neon_steps import stage
from neon_steps.io import copy_tensors, load_metadata

KEPT_METADATA = ("model", "images_seen", "budget_mi", "step")


def extract_weights(state: str, out: str) -> None:
    meta = load_metadata(state)
    copy_tensors(state, out, lambda name: name.removeprefix("net.") if name.startswith("net.") else None,
                 {k: meta[k] for k in KEPT_METADATA if k in meta})


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("state", type=stage.existing("safetensors"), help="a fine-tune state (.state.safetensors)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    with stage.logged(None):
        extract_weights(args.state, args.out)
    return 0


if __name__ == "__main__":
    if "snakemake" in globals():
        smk = snakemake  # noqa: F821
        stage.run_snakemake(smk, lambda: extract_weights(smk.input[0], smk.output[0]))
    else:
        sys.exit(main())
