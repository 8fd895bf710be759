"""The results tables, from the evaluations' files: sweep.csv, one row per (model, S, B, w, γ),
and table_a1.csv, one row per model, the paper's Table A.1: the base (w = 0) beside the best Neon
point, with the fine-tune's extra compute, and the spread of the base's FID between evaluation
seeds where `evaluate.noise_seeds` asks for it."""

from typing import Mapping, Sequence

import pandas as pd

from neon_steps.io import atomic_path, read_json

# No timings: two runs of the same config give the same bytes.
SWEEP_COLUMNS = ["model", "family", "S", "B", "w", "gamma", "fid", "precision", "recall", "n", "prc_n", "nfe", "seed"]
NOISE_COLUMNS = ["model", "gamma", "seed", "fid", "precision", "recall", "n"]


def sweep_table(metric_files: Sequence[str]) -> pd.DataFrame:
    """The points of the evaluate_point jobs' files (one point each) and evaluate_line's (a list of points)."""
    rows = [row for f in metric_files for row in as_list(read_json(f))]
    frame = pd.DataFrame(rows, columns=SWEEP_COLUMNS)
    # precision/recall are null where the reference has no real features (Inception mu/sigma only)
    frame[["precision", "recall"]] = frame[["precision", "recall"]].astype(float)
    return frame.sort_values(["model", "S", "B", "gamma", "w"], kind="stable").reset_index(drop=True)


def as_list(record: dict | list) -> list:
    return record if isinstance(record, list) else [record]


def noise_table(noise_files: Sequence[str]) -> pd.DataFrame:
    """The base model's evaluations at the extra seeds (evaluate.noise_seeds)."""
    rows = [read_json(f) for f in noise_files]
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
    rows = [read_json(f) for f in final_files]
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


def write_csv(frame: pd.DataFrame, out: str) -> None:
    with atomic_path(out) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.6g")


