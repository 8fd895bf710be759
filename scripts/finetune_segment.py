"""Rule finetune_segment: self-training on S, from the previous budget's state to B."""
from neon_steps.finetune import finetune_segment
from neon_steps.stage import run

# How often a resume point is saved decides what a killed job loses, and readers how fast batches
# come, not the result: read from the config, not params, so that changing them reruns nothing.
settings = snakemake.config["models"][snakemake.wildcards.model]["finetune"]
# The GPUs are the job's (resources.finetune.gpu, or a profile's gpu for the rule): they change
# results by float rounding only (the batch is shared out, not changed), so they are no param either.
run(snakemake, finetune_segment, snakemake.params.model, float(snakemake.wildcards.B), snakemake.input.synthetic,
    snakemake.input.start, snakemake.output[0], gpus=snakemake.resources.gpu,
    **{k: settings[k] for k in ("save_every_images", "save_every_minutes", "loader_workers") if k in settings})
