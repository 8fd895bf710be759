"""Rule finetune_segment: self-training on S, from the previous budget's state to B."""
from neon_steps.finetune import finetune_segment
from neon_steps.stage import run

run(snakemake, finetune_segment, snakemake.params.model, float(snakemake.wildcards.B), snakemake.input.synthetic,
    snakemake.input.start, snakemake.output[0])
