"""Rule finetune_segment: self-training on S, from the previous budget's state to B."""
from neon_steps.finetune import finetune_segment
from neon_steps.stage import run

# How often a resume point is saved decides what a killed job loses, not its result: read from the
# config, not params, so that changing it reruns nothing.
saving = {k: v for k, v in snakemake.config["models"][snakemake.wildcards.model]["finetune"].items()
          if k in ("save_every_images", "save_every_minutes")}
run(snakemake, finetune_segment, snakemake.params.model, float(snakemake.wildcards.B), snakemake.input.synthetic,
    snakemake.input.start, snakemake.output[0], **saving)
