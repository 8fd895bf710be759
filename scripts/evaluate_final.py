"""Rule evaluate_final: the search's chosen point at the final sample count (drawn here, or by part jobs)."""
from neon_steps.fid import evaluate_final
from neon_steps.stage import point, run

run(snakemake, evaluate_final, snakemake.params.model, snakemake.input.get("weights"), snakemake.input.reference,
    point(snakemake.wildcards), snakemake.params.n, snakemake.input.search, snakemake.output.metrics,
    snakemake.input.get("classifier"), parts=list(snakemake.input.get("parts", [])))
