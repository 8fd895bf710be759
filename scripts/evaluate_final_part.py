"""Rule evaluate_final_part: the features of one part of the samples a final evaluation adds."""
from neon_steps.fid import evaluate_part
from neon_steps.stage import point, run

run(snakemake, evaluate_part, snakemake.params.model, snakemake.input.weights, point(snakemake.wildcards),
    snakemake.params.rows, snakemake.output[0], snakemake.input.get("classifier"), n_final=snakemake.params.n)
