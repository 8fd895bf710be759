"""Rule extract_selftrained: θ_s, the weights of a fine-tune state."""
from neon_steps.ckpt import extract_weights
from neon_steps.stage import run

run(snakemake, extract_weights, snakemake.input[0], snakemake.output[0])
