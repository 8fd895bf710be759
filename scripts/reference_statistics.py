"""Rule reference_statistics: the features (or Inception statistics) every FID compares against."""
from neon_steps.reference import build_reference
from neon_steps.stage import run

run(snakemake, build_reference, snakemake.wildcards.dataset, snakemake.params.dataset, snakemake.output[0],
    snakemake.input.get("data"), snakemake.input.get("classifier"))
