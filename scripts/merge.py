"""Rule merge: θ = (1 + w)·θ_r − w·θ_s."""
from neon_steps.merge import merge_point
from neon_steps.stage import run

run(snakemake, merge_point, snakemake.params.model, snakemake.input.base, snakemake.input.selftrained,
    snakemake.params.w, list(snakemake.output))
