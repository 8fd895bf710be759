"""Rule train_classifier: the CNN whose features score an image data set."""
from neon_steps.classifier import train
from neon_steps.stage import run

run(snakemake, train, snakemake.wildcards.dataset, snakemake.params.settings, snakemake.input[0], snakemake.output[0])
