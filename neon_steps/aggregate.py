"""Stage `aggregate`: every evaluated point into results tables and figures.

sweep.csv has one row per (model, S, B, w, γ); table_a1.csv one row per model, the paper's
Table A.1: the base (w = 0) beside the best Neon point, with the fine-tune's extra compute."""

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from neon_steps import stage  # noqa: E402
from neon_steps.io import atomic_path  # noqa: E402

# No timings: two runs of the same config give the same bytes.
SWEEP_COLUMNS = ["model", "family", "S", "B", "w", "gamma", "fid", "precision", "recall", "n", "prc_n", "nfe"]


def sweep_table(metric_files: Sequence[str]) -> pd.DataFrame:
    rows = [json.loads(Path(f).read_text()) for f in metric_files]
    return (pd.DataFrame(rows, columns=SWEEP_COLUMNS)
            .sort_values(["model", "S", "B", "gamma", "w"], kind="stable").reset_index(drop=True))


def table_a1(sweep: pd.DataFrame, base_budgets_mi: Mapping[str, float]) -> pd.DataFrame:
    """Per model: the base (w = 0, its best γ) and the best point of the whole sweep."""
    rows = []
    for model, points in sweep.groupby("model", sort=False):
        base = points[points.w == 0].sort_values("fid", kind="stable").iloc[0]
        best = points.sort_values("fid", kind="stable").iloc[0]
        rows.append({
            "model": model, "family": best.family, "nfe": int(best.nfe),
            "fid_base": base.fid, "fid_neon": best.fid,
            "improvement_pct": 100 * (base.fid - best.fid) / base.fid,
            "w": best.w, "gamma": best.gamma, "B": best.B, "S": int(best.S),
            "extra_compute_pct": 100 * best.B / base_budgets_mi[model],
            "precision_base": base.precision, "recall_base": base.recall,
            "precision_neon": best.precision, "recall_neon": best.recall,
            "gamma_base": base.gamma, "n": int(best.n),
        })
    return pd.DataFrame(rows)


def plot_fid_vs_w(sweep: pd.DataFrame, out: str) -> None:
    """FID, precision and recall against w: one row per model, one line per (|S|, B) — the
    paper's Figures 4 and B.2. γ is fixed at each line's best."""
    models = list(dict.fromkeys(sweep.model))
    metrics = ["fid", "precision", "recall"]
    fig, axes = plt.subplots(len(models), 3, figsize=(12, 3.0 * len(models)), squeeze=False)
    for row, model in zip(axes, models):
        points = sweep[sweep.model == model]
        for (size, budget), line in points.groupby(["S", "B"]):
            gamma = line.sort_values("fid", kind="stable").iloc[0].gamma
            line = line[line.gamma == gamma].sort_values("w")
            label = f"|S|={size}, B={budget:g} Mi" + (f", γ={gamma:g}" if points.gamma.nunique() > 1 else "")
            for ax, metric in zip(row, metrics):
                ax.plot(line.w, line[metric], marker="o", markersize=3, label=label)
        best = points.sort_values("fid", kind="stable").iloc[0]
        row[0].axvline(best.w, color="grey", linestyle=":", linewidth=1)
        for ax, metric in zip(row, metrics):
            ax.axvline(0, color="black", linewidth=0.5)
            ax.set_title(f"{model}: {metric}", fontsize=9)
            ax.set_xlabel("merge weight w  (w > 0: Neon, w < 0: toward θ_s)", fontsize=8)
        row[0].legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def write_csv(frame: pd.DataFrame, out: str) -> None:
    with atomic_path(out) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.6g")


def aggregate(metric_files: Sequence[str], base_budgets_mi: Mapping[str, float],
              sweep_out: str, table_out: str, figure_out: str) -> pd.DataFrame:
    sweep = sweep_table(metric_files)
    table = table_a1(sweep, base_budgets_mi)
    write_csv(sweep, sweep_out)
    write_csv(table, table_out)
    plot_fid_vs_w(sweep, figure_out)
    print(table.to_string(index=False), file=sys.stderr)
    return table


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("metrics", nargs="+", help="metric files (.json) written by the fid stage")
    parser.add_argument("--base-budget", action="append", default=[], metavar="MODEL=MI",
                        help="a model's base training budget in Mi images (for extra compute)")
    parser.add_argument("--out-dir", default="results")
    args = parser.parse_args(argv)
    budgets = {k: float(v) for k, v in (item.split("=", 1) for item in args.base_budget)}
    out = Path(args.out_dir)
    aggregate(args.metrics, budgets, out / "tables/sweep.csv", out / "tables/table_a1.csv",
              out / "figures/fid_vs_w.png")
    return 0


if __name__ == "__main__":
    if "snakemake" in globals():
        smk = snakemake  # noqa: F821
        stage.run_snakemake(smk, lambda: aggregate(smk.input, smk.params.base_budgets_mi, smk.output.sweep,
                                                   smk.output.table, smk.output.figure))
    else:
        sys.exit(main())
