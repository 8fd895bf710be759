"""Rule evaluate_noise_seed_part: the features of one part of the base's draw at another evaluation seed."""
from neon_steps.fid import evaluate_part
from neon_steps.stage import point, run

run(snakemake, evaluate_part, snakemake.params.model, snakemake.input.weights, point(snakemake.wildcards),
    snakemake.params.rows, snakemake.output[0], snakemake.input.get("classifier"))
