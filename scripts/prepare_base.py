"""Rule prepare_base: θ_r, trained on real data or converted from the user's checkpoint."""
from neon_steps.base import make_base
from neon_steps.stage import run

run(snakemake, make_base, snakemake.params.model, snakemake.output[0], snakemake.input.get("data"))
