"""Rule evaluate_point: FID, precision and recall of θ at one (w, γ) (drawn here, or by part jobs)."""
from neon_steps.fid import evaluate
from neon_steps.stage import point, run

run(snakemake, evaluate, snakemake.params.model, snakemake.input.get("weights"), snakemake.input.reference,
    point(snakemake.wildcards), snakemake.output.metrics, snakemake.input.get("classifier"),
    snakemake.output.preview, snakemake.output.features, parts=list(snakemake.input.get("parts", [])))
