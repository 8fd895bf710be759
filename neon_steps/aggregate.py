"""Stage `aggregate`: every evaluated point into the results tables (neon_steps.tables) and
figures (neon_steps.figures)."""

import sys
from typing import Mapping, Sequence

import pandas as pd

from neon_steps.figures import (plot_fid_vs_budget, plot_fid_vs_w, plot_fid_w_gamma, plot_samples, plot_summary,
                                previews_by_point)
from neon_steps.tables import final_table, noise_table, sweep_table, table_a1, write_csv


def aggregate(metric_files: Sequence[str], base_budgets_mi: Mapping[str, float],
              sweep_out: str, table_out: str, figure_out: str, noise_files: Sequence[str] = (),
              budget_out: str | None = None, heatmap_out: str | None = None,
              samples_out: str | None = None, preview_files: Sequence[str] = (),
              final_files: Sequence[str] = (), summary_out: str | None = None) -> pd.DataFrame:
    """`noise_files`: the base's evaluations at extra seeds; `preview_files`: the first samples
    of the points whose models go in samples.png and summary.png; `final_files`: the final
    evaluations of the searches' chosen points."""
    sweep = sweep_table(metric_files)
    table = table_a1(sweep, base_budgets_mi, noise_table(noise_files), final_table(final_files))
    write_csv(sweep, sweep_out)
    write_csv(table, table_out)
    plot_fid_vs_w(sweep, figure_out)
    if budget_out:
        plot_fid_vs_budget(sweep, budget_out)
    if heatmap_out:
        plot_fid_w_gamma(sweep, heatmap_out)
    previews = previews_by_point(preview_files)
    if samples_out:
        plot_samples(sweep, previews, samples_out)
    if summary_out:
        plot_summary(sweep, previews, summary_out)
    print(table.to_string(index=False), file=sys.stderr)
    return table
