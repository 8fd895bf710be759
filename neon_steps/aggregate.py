"""Stage `aggregate`: every evaluated point into results tables and figures.

sweep.csv has one row per (model, S, B, w, γ); table_a1.csv one row per model, the paper's
Table A.1: the base (w = 0) beside the best Neon point, with the fine-tune's extra compute, and
the spread of the base's FID between evaluation seeds where `evaluate.noise_seeds` asks for it.

Figures: fid_vs_w.png (FID, precision, recall against w: the paper's Figure 4), fid_vs_budget.png
(best FID against B for each |S|: Figure 3), fid_w_gamma.png (FID over w and γ: Figure 6),
samples.png (generated digits, the base beside the best Neon point, for image models), summary.png
(the run on one page: the toy's FID against w, each image model's digits at the base and at Neon)."""

import argparse
import json
import sys
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from neon_steps import stage  # noqa: E402
from neon_steps.io import atomic_path  # noqa: E402

# No timings: two runs of the same config give the same bytes.
SWEEP_COLUMNS = ["model", "family", "S", "B", "w", "gamma", "fid", "precision", "recall", "n", "prc_n", "nfe", "seed"]
NOISE_COLUMNS = ["model", "gamma", "seed", "fid", "precision", "recall", "n"]


def sweep_table(metric_files: Sequence[str]) -> pd.DataFrame:
    """The points of the fid jobs' files (one point each) and fid_line's (a list of points)."""
    rows = [row for f in metric_files for row in as_list(json.loads(Path(f).read_text()))]
    frame = pd.DataFrame(rows, columns=SWEEP_COLUMNS)
    # precision/recall are null where the reference has no real features (Inception mu/sigma only)
    frame[["precision", "recall"]] = frame[["precision", "recall"]].astype(float)
    return frame.sort_values(["model", "S", "B", "gamma", "w"], kind="stable").reset_index(drop=True)


def as_list(record: dict | list) -> list:
    return record if isinstance(record, list) else [record]


def noise_table(noise_files: Sequence[str]) -> pd.DataFrame:
    """The base model's evaluations at the extra seeds (evaluate.noise_seeds)."""
    rows = [json.loads(Path(f).read_text()) for f in noise_files]
    return pd.DataFrame(rows, columns=NOISE_COLUMNS)


def base_spread(sweep: pd.DataFrame, noise: pd.DataFrame, model: str, gamma: float) -> tuple[int, float]:
    """How many seeds the base was evaluated at (at γ), and the standard deviation of its FID
    between them (NaN with one seed)."""
    main = sweep[(sweep.model == model) & (sweep.w == 0) & (sweep.gamma == gamma)].iloc[:1]
    extra = noise[(noise.model == model) & (noise.gamma == gamma)]
    fids = pd.concat([main[["seed", "fid"]], extra[["seed", "fid"]]]).drop_duplicates("seed").fid
    return len(fids), float(fids.std(ddof=1)) if len(fids) > 1 else float("nan")


FINAL_COLUMNS = ["model", "S", "B", "w", "gamma", "fid", "precision", "recall", "n", "n_reused", "n_sampled"]


def final_table(final_files: Sequence[str]) -> pd.DataFrame:
    """The final evaluations (search.final_n samples) of each search's chosen point."""
    rows = [json.loads(Path(f).read_text()) for f in final_files]
    return pd.DataFrame(rows, columns=FINAL_COLUMNS)


def best_point(points: pd.DataFrame) -> pd.Series:
    """The lowest-FID row (the first of equals, in the sweep's order)."""
    return points.sort_values("fid", kind="stable").iloc[0]


def base_and_best(points: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """The base (w = 0, at its best γ) and the best point overall."""
    return best_point(points[points.w == 0]), best_point(points)


def table_a1(sweep: pd.DataFrame, base_budgets_mi: Mapping[str, float],
             noise: pd.DataFrame | None = None, finals: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per model: the base (w = 0, its best γ) and the best point of the whole sweep; with
    `noise`, the base's FID spread between evaluation seeds (fid_base_sd, at the base's γ, over
    `seeds` seeds) and the improvement in units of it (gain_over_sd); with `finals`, the best
    point's final FID (fid_final) and how many samples it used (n_final, of which n_final_sampled
    were drawn for it; the rest are the search's). `evaluations`: points evaluated for the model."""
    noise = noise_table([]) if noise is None else noise
    finals = final_table([]) if finals is None else finals
    rows = []
    for model, points in sweep.groupby("model", sort=False):
        base, best = base_and_best(points)
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
        final = finals[(finals.model == model) & (finals.S == best.S) & (finals.B == best.B)
                       & (finals.w == best.w) & (finals.gamma == best.gamma)]
        rows[-1].update(evaluations=len(points),
                        fid_final=final.fid.iloc[0] if len(final) else float("nan"),
                        n_final=int(final.n.iloc[0]) if len(final) else pd.NA,
                        n_final_sampled=int(final.n_sampled.iloc[0]) if len(final) else pd.NA)
        seeds, sd = base_spread(sweep, noise, model, base.gamma)
        gain_over_sd = (base.fid - best.fid) / sd if sd > 0 else float("nan")
        rows[-1].update(seeds=seeds, fid_base_sd=sd, gain_over_sd=gain_over_sd)
    return pd.DataFrame(rows)


def plot_fid_vs_w(sweep: pd.DataFrame, out: str) -> None:
    """FID, precision and recall against w: one row per model, one line per (|S|, B) — the
    paper's Figures 4 and B.2. γ is fixed at each line's best."""
    models = list(dict.fromkeys(sweep.model))
    metrics = ["fid", "precision", "recall"]
    fig, axes = plt.subplots(len(models), 3, figsize=(12, 3.0 * len(models)), squeeze=False)
    for row, model in zip(axes, models):
        draw_against_w(row, sweep[sweep.model == model], metrics)
        for ax, metric in zip(row, metrics):
            ax.set_title(f"{model}: {metric}", fontsize=9)
    save_figure(fig, out)


def draw_against_w(axes, points: pd.DataFrame, metrics: Sequence[str]) -> pd.Series:
    """One model's `metrics` against w, one axis each: a line per (|S|, B) at that line's best γ,
    the base (w = 0) and, on the first axis, the best w marked. Returns the best point."""
    for (size, budget), line in points.groupby(["S", "B"]):
        gamma = best_point(line).gamma
        line = line[line.gamma == gamma].sort_values("w")
        label = f"|S|={size}, B={budget:g} Mi" + (f", γ={gamma:g}" if points.gamma.nunique() > 1 else "")
        for ax, metric in zip(axes, metrics):
            ax.plot(line.w, line[metric], marker="o", markersize=3, label=label)
    best = best_point(points)
    axes[0].axvline(best.w, color="grey", linestyle=":", linewidth=1)
    for ax in axes:
        ax.axvline(0, color="black", linewidth=0.5)
        ax.set_xlabel("merge weight w  (w > 0: Neon, w < 0: toward θ_s)", fontsize=8)
    axes[0].legend(fontsize=7)
    return best


def best_per_budget(points: pd.DataFrame) -> pd.DataFrame:
    """The best FID over w and γ at each (|S|, B)."""
    return points.loc[points.groupby(["S", "B"]).fid.idxmin()].sort_values(["S", "B"])


def plot_fid_vs_budget(sweep: pd.DataFrame, out: str) -> None:
    """Best FID (over w and γ) against the fine-tuning budget B, one line per |S|, the base as a
    dashed line: the paper's Figure 3."""
    models = list(dict.fromkeys(sweep.model))
    fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 3.4), squeeze=False)
    for ax, model in zip(axes[0], models):
        points = sweep[sweep.model == model]
        for size, line in best_per_budget(points).groupby("S"):
            ax.plot(line.B, line.fid, marker="o", label=f"|S|={size}")
            for _, row in line.iterrows():
                ax.annotate(f"w={row.w:g}" + (f", γ={row.gamma:g}" if points.gamma.nunique() > 1 else ""),
                            (row.B, row.fid), fontsize=6, textcoords="offset points", xytext=(3, 3))
        ax.axhline(points[points.w == 0].fid.min(), color="black", linestyle="--", linewidth=1, label="base (w=0)")
        if points.B.nunique() > 1:
            ax.set_xscale("log")
        ax.set_title(f"{model}: best FID over w, γ", fontsize=9)
        ax.set_xlabel("fine-tuning budget B (Mi images)", fontsize=8)
        ax.set_ylabel("FID", fontsize=8)
        ax.legend(fontsize=7)
    save_figure(fig, out)


def plot_fid_w_gamma(sweep: pd.DataFrame, out: str) -> None:
    """FID over (w, γ) at each model's best (|S|, B), the optimum boxed: the paper's Figure 6."""
    models = list(dict.fromkeys(sweep.model))
    fig, axes = plt.subplots(1, len(models), figsize=(4.4 * len(models), 3.6), squeeze=False)
    for ax, model in zip(axes[0], models):
        points = sweep[sweep.model == model]
        best = best_point(points)
        at = points[(points.S == best.S) & (points.B == best.B)]
        grid = at.pivot_table(index="gamma", columns="w", values="fid", aggfunc="first").sort_index()
        image = ax.imshow(grid.values, origin="lower", aspect="auto", cmap="viridis_r")
        ax.set_xticks(range(grid.shape[1]), [f"{w:g}" for w in grid.columns], fontsize=7)
        ax.set_yticks(range(grid.shape[0]), [f"{g:g}" for g in grid.index], fontsize=7)
        middle = np.nanmean(grid.values)
        for (i, j), value in np.ndenumerate(grid.values):
            ax.text(j, i, f"{value:.3g}", ha="center", va="center", fontsize=6,
                    color="white" if value > middle else "black")  # viridis_r: high FID is dark
        i, j = list(grid.index).index(best.gamma), list(grid.columns).index(best.w)
        ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2))
        ax.set_xlabel("merge weight w", fontsize=8)
        ax.set_ylabel("guidance γ", fontsize=8)
        ax.set_title(f"{model}: FID at |S|={best.S}, B={best.B:g} Mi", fontsize=9)
        fig.colorbar(image, ax=ax, fraction=0.046)
    save_figure(fig, out)


def image_grid(samples: np.ndarray, labels: np.ndarray | None = None, columns: int = 10) -> np.ndarray:
    """uint8 images [N,1,H,W] as one gray image: one row per class where labels are known (as
    many per class as every class has, at most `columns`), in drawing order otherwise."""
    images = samples[:, 0]
    if labels is not None:
        classes = labels.max() + 1
        per = int(min(np.bincount(labels, minlength=classes).min(), columns))
        images = images[np.concatenate([np.flatnonzero(labels == c)[:per] for c in range(classes)])]
        columns = max(per, 1)
    rows = -(-len(images) // columns)
    h, w = images.shape[1:]
    canvas = np.full((rows * (h + 1) + 1, columns * (w + 1) + 1), 128, dtype=np.uint8)
    for k, image in enumerate(images):
        r, c = divmod(k, columns)
        canvas[1 + r * (h + 1):1 + r * (h + 1) + h, 1 + c * (w + 1):1 + c * (w + 1) + w] = image
    return canvas


def point_key(row) -> tuple:
    return (row["model"], int(row["S"]), float(row["B"]), float(row["w"]), float(row["gamma"]))


def previews_by_point(preview_files: Sequence[str]) -> dict[tuple, str]:
    """The previews the fid stage saved, by the point in their metadata."""
    from neon_steps.io import load_metadata

    return {point_key(load_metadata(f)): str(f) for f in preview_files}


def plot_samples(sweep: pd.DataFrame, previews: Mapping[tuple, str], out: str) -> None:
    """Generated digits per image model, one row per class: the base (w = 0, its best γ) beside
    the best Neon point, from the previews the fid stage saved."""
    models = [m for m in dict.fromkeys(sweep.model) if any(key[0] == m for key in previews)]
    fig, axes = plt.subplots(max(1, len(models)), 2, figsize=(6.4, 3.6 * max(1, len(models))), squeeze=False)
    if not models:
        for ax in axes[0]:
            ax.axis("off")
        axes[0][0].text(1.0, 0.5, "no image models in this config", ha="center", va="center")
    for row, model in zip(axes, models):
        draw_base_and_best_samples(row, model, sweep[sweep.model == model], previews)
    save_figure(fig, out)


def draw_base_and_best_samples(axes, model: str, points: pd.DataFrame, previews: Mapping[tuple, str]) -> None:
    """An image model's generated digits on two axes: the base (w = 0, its best γ), then the best
    Neon point."""
    from safetensors.numpy import load_file  # as arrays: the aggregate needs no torch

    base, best = base_and_best(points)
    for ax, point in zip(axes, [base, best]):
        tensors = load_file(previews[point_key(point)])
        ax.imshow(image_grid(tensors["samples"], tensors.get("labels")), cmap="gray", vmin=0, vmax=255,
                  interpolation="nearest")
        where = ("the base (w=0)" if point is base else
                 f"best Neon: w={point.w:g}, |S|={point.S}, B={point.B:g} Mi")
        ax.set_title(f"{model}, {where}\nγ={point.gamma:g}, FID {point.fid:.2f}", fontsize=8)
        ax.axis("off")


def what_w_is(w: float) -> str:
    """A merge weight with its sign spelled out, for a title."""
    return f"w=+{w:g} (Neon, away from θ_s)" if w > 0 else f"w={w:g} (toward θ_s)" if w < 0 else "w=0 (the base)"


def plot_summary(sweep: pd.DataFrame, previews: Mapping[tuple, str], out: str) -> None:
    """The run on one page: FID against w for every model without generated-image previews (the
    2-D toy), a panel each; below, for each image model, its digits at the base beside the best
    Neon point (as samples.png). Either part is left out when the config has no such model."""
    models = list(dict.fromkeys(sweep.model))
    image_models = [m for m in models if any(key[0] == m for key in previews)]
    curve_models = [m for m in models if m not in image_models]
    pairs_per_row = min(len(image_models), 2)  # two image models (four panels) side by side
    image_rows = -(-len(image_models) // 2)
    columns = max(len(curve_models), 2 * pairs_per_row)
    heights = [3.0] * bool(curve_models) + [3.6] * image_rows
    fig = plt.figure(figsize=(3.4 * columns, sum(heights) + 0.5))
    grid = fig.add_gridspec(len(heights), columns, height_ratios=heights)
    for column, model in enumerate(curve_models):
        ax = fig.add_subplot(grid[0, column])
        best = draw_against_w([ax], sweep[sweep.model == model], ["fid"])
        ax.set_title(f"{model}: FID\nbest {what_w_is(best.w)}", fontsize=9)
        ax.set_ylabel("FID (lower is better)" if column == 0 else "", fontsize=8)
        ax.tick_params(labelsize=7)
    for k, model in enumerate(image_models):
        row, slot = divmod(k, 2)
        in_row = min(2, len(image_models) - 2 * row)
        first = (columns - 2 * in_row) // 2 + 2 * slot  # a short last row is centred
        axes = [fig.add_subplot(grid[bool(curve_models) + row, first + i]) for i in range(2)]
        draw_base_and_best_samples(axes, model, sweep[sweep.model == model], previews)
    fig.suptitle("θ = (1+w)·θ_r − w·θ_s.  w > 0: Neon, extrapolating away from the self-trained θ_s\n"
                 "w < 0: toward θ_s;  w = 0: the base θ_r;  w = −1: θ_s", fontsize=9)
    save_figure(fig, out)


def save_figure(fig, out: str) -> None:
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def write_csv(frame: pd.DataFrame, out: str) -> None:
    with atomic_path(out) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.6g")


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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("metrics", nargs="+", type=stage.existing("json"),
                        help="metric files (.json) written by the fid stage")
    parser.add_argument("--base-budget", action="append", default=[], metavar="MODEL=MI",
                        help="a model's base training budget in Mi images (for extra compute)")
    parser.add_argument("--noise", nargs="*", default=[], type=stage.existing("json"),
                        help="the base's metric files at extra seeds (fid_noise)")
    parser.add_argument("--final", nargs="*", default=[], type=stage.existing("json"),
                        help="final evaluations (fid_final) of chosen points")
    parser.add_argument("--out-dir", default="results")
    args = parser.parse_args(argv)
    try:
        budgets = {k: float(v) for k, v in (item.split("=", 1) for item in args.base_budget)}
    except ValueError:
        parser.error(f"argument --base-budget: expected MODEL=MI (a model's base budget in Mi images), "
                     f"got {' '.join(args.base_budget)}")
    out = Path(args.out_dir)
    with stage.logged(None):
        aggregate(args.metrics, budgets, out / "tables/sweep.csv", out / "tables/table_a1.csv",
                  out / "figures/fid_vs_w.png", args.noise, out / "figures/fid_vs_budget.png",
                  out / "figures/fid_w_gamma.png", out / "figures/samples.png",
                  [p for f in args.metrics if (p := Path(f.removesuffix(".json") + ".preview.safetensors")).exists()],
                  final_files=args.final, summary_out=out / "figures/summary.png")
    return 0


if __name__ == "__main__":
    if "snakemake" in globals():
        smk = snakemake  # noqa: F821
        # the searches' inputs (search_*): their points' metrics, previews and final evaluations
        searched = [f for name in smk.input.keys() if name.startswith("search_") for f in smk.input[name]]
        metrics = list(smk.input.metrics) + [f for f in searched
                                             if f.endswith(".json") and not f.endswith(".final.json")]
        finals = [f for f in searched if f.endswith(".final.json")]
        previews = list(smk.input.previews) + [f for f in searched if f.endswith(".preview.safetensors")]
        stage.run_snakemake(smk, lambda: aggregate(
            metrics, smk.params.base_budgets_mi, smk.output.sweep, smk.output.table, smk.output.figure,
            smk.input.noise, smk.output.budgets, smk.output.heatmap, smk.output.samples, previews, finals,
            smk.output.summary))
    else:
        sys.exit(main())
