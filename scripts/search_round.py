"""Rule search_round: replay the (w, γ) search on what is evaluated so far; name the next points."""
from neon_steps.search_round import search_round
from neon_steps.stage import run

run(snakemake, search_round, snakemake.params.search, int(snakemake.wildcards.k), snakemake.input.get("metrics", []),
    snakemake.input.base, snakemake.input.noise, snakemake.output[0])
