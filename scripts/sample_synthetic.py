"""Rule sample_synthetic: one part of S, its rows' samples of θ_r drawn with its usual sampler κ."""
from neon_steps.sample import sample_synthetic
from neon_steps.stage import run

run(snakemake, sample_synthetic, snakemake.params.model, int(snakemake.wildcards.S), int(snakemake.wildcards.part),
    snakemake.input.base, snakemake.output[0])
