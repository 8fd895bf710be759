"""Rule gather_synthetic: S's manifest, listing its parts (their headers read, no torch)."""
from neon_steps.stage import run
from neon_steps.synthetic import write_manifest

run(snakemake, write_manifest, snakemake.output[0], snakemake.input.parts)
