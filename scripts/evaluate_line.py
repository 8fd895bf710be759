"""Rule evaluate_line: every w of one (|S|, B, γ) in one job, merged in memory."""
from neon_steps.fid import evaluate_line
from neon_steps.stage import point, run

run(snakemake, evaluate_line, snakemake.params.model, snakemake.input.base, snakemake.input.selftrained,
    snakemake.input.reference, point(snakemake.wildcards), snakemake.params.w, snakemake.output[0],
    snakemake.input.get("classifier"))
