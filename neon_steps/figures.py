"""The results figures, from the tables: fid_vs_w.png (FID, precision, recall against w: the
paper's Figure 4), fid_vs_budget.png (best FID against B for each |S|: Figure 3), fid_w_gamma.png
(FID over w and γ: Figure 6), samples.png (generated digits, the base beside the best Neon point,
for image models), summary.png (the run on one page: the toy's FID against w, each image model's
digits at the base and at Neon)."""

from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from neon_steps.io import atomic_path  # noqa: E402
from neon_steps.tables import base_and_best, best_point  # noqa: E402


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
