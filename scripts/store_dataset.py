"""Rule store_dataset: a data set that ships inside a package, stored once with its split."""
from neon_steps.dataset import store_dataset
from neon_steps.stage import run

run(snakemake, store_dataset, snakemake.wildcards.dataset, snakemake.params.dataset, snakemake.output[0])
