"""Rule evaluate_point_part: the features of one part of a point's draw (and its share of the preview)."""
from neon_steps.fid import evaluate_part
from neon_steps.stage import point, run

run(snakemake, evaluate_part, snakemake.params.model, snakemake.input.weights, point(snakemake.wildcards),
    snakemake.params.rows, snakemake.output[0], snakemake.input.get("classifier"), preview=True)
