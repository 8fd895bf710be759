"""Rule aggregate: the tables and figures of every evaluated point."""
from neon_steps.aggregate import aggregate
from neon_steps.stage import by_role, run

files = by_role(snakemake.input, "metrics", "previews", "noise", "final")  # the grid's and each search's
out = snakemake.output
run(snakemake, aggregate, files["metrics"], snakemake.params.base_budgets_mi, out.sweep, out.table, out.figure,
    files["noise"], out.budgets, out.heatmap, out.samples, files["previews"], files["final"], out.summary)
