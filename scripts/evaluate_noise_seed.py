"""Rule evaluate_noise_seed: the base (w = 0) at another evaluation seed (drawn here, or by part jobs)."""
from neon_steps.fid import evaluate
from neon_steps.stage import point, run

run(snakemake, evaluate, snakemake.params.model, snakemake.input.get("weights"), snakemake.input.reference,
    point(snakemake.wildcards), snakemake.output.metrics, snakemake.input.get("classifier"),
    parts=list(snakemake.input.get("parts", [])))
