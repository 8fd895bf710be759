"""The workflow end to end on the tiny config, and which jobs a change makes stale."""
import math

import pandas as pd
import pytest
import yaml

from neon_steps import tables
from conftest import assert_drawn_figure, edited_config, planned_jobs, respelt, snakemake, tiny_config

pytestmark = pytest.mark.slow

TABLE_A1_COLUMNS = ["model", "family", "nfe", "fid_base", "fid_neon", "improvement_pct", "w", "gamma", "B", "S",
                    "extra_compute_pct", "precision_base", "recall_base", "precision_neon", "recall_neon", "gamma_base",
                    "n", "evaluations", "fid_final", "n_final", "n_final_sampled", "seeds", "fid_base_sd",
                    "gain_over_sd"]


def test_tiny_run_writes_the_tables_and_figure(tiny_run):
    sweep = pd.read_csv(tiny_run / "results/tables/sweep.csv")
    assert list(sweep.columns) == tables.SWEEP_COLUMNS
    # ddpm: 2 budgets x w in {-0.5, 0, 0.5}; ar: 1 budget x 3 w.
    assert sorted(sweep.groupby("model").size().items()) == [("ar", 3), ("ddpm", 6)]
    assert set(sweep.w) == {-0.5, 0.0, 0.5}
    assert sweep.fid.notna().all() and (sweep.fid >= 0).all()
    assert sweep.precision.between(0, 1).all() and sweep.recall.between(0, 1).all()
    # w = 0 is the base, evaluated on the same draw for every budget: identical scores.
    base = sweep[(sweep.model == "ddpm") & (sweep.w == 0)]
    assert base.fid.nunique() == 1

    table = pd.read_csv(tiny_run / "results/tables/table_a1.csv")
    assert list(table.model) == ["ar", "ddpm"]
    assert list(table.columns) == TABLE_A1_COLUMNS
    ddpm = table.set_index("model").loc["ddpm"]
    assert ddpm.fid_neon <= ddpm.fid_base
    assert ddpm.fid_base == base.fid.iloc[0]
    assert ddpm.nfe == 10 and ddpm.family == "diffusion"
    assert math.isclose(ddpm.extra_compute_pct, 100 * ddpm.B / 0.05)

    assert_drawn_figure(tiny_run / "results/figures/fid_vs_w.png")


def test_nothing_to_do_right_after_a_run(tiny_run):
    assert planned_jobs(tiny_run) == []


def test_the_same_settings_spelt_otherwise_rerun_nothing(tiny_run, tmp_path):
    config = tmp_path / "respelt.yaml"
    config.write_text(yaml.safe_dump(respelt(tiny_config()), sort_keys=False))
    assert "1.000000e-04" in config.read_text() and "n: 1000.0" in config.read_text()
    assert planned_jobs(tiny_run, config) == []


def test_adding_a_w_runs_only_its_merge_and_fid(tiny_copy, tmp_path):
    config = edited_config(tmp_path, lambda c: c["models"]["ddpm"]["evaluate"]["w"].append(0.25))
    jobs = planned_jobs(tiny_copy, config)
    rules = sorted(rule for rule, _ in jobs)
    assert rules == ["aggregate", "all", "evaluate_point", "evaluate_point", "merge", "merge"]  # one per budget
    assert {wc["w"] for rule, wc in jobs if rule in ("merge", "evaluate_point")} == {"0.25"}


def test_changing_the_finetune_lr_reruns_finetune_and_after_only(tiny_copy, tmp_path):
    config = edited_config(tmp_path, lambda c: c["models"]["ddpm"]["finetune"].update(lr=2e-4))
    jobs = planned_jobs(tiny_copy, config)
    rules = {rule for rule, _ in jobs}
    assert rules == {"finetune_segment", "extract_selftrained", "merge", "evaluate_point", "aggregate", "all"}
    assert {wc["model"] for _, wc in jobs if wc} == {"ddpm"}
    assert sum(rule == "finetune_segment" for rule, _ in jobs) == 2


def test_adding_a_budget_trains_one_more_segment(tiny_copy, tmp_path):
    config = edited_config(tmp_path, lambda c: c["models"]["ddpm"]["finetune"]["budgets"].append(0.02))
    jobs = planned_jobs(tiny_copy, config)
    assert [wc["B"] for rule, wc in jobs if rule == "finetune_segment"] == ["0.02"]
    assert {rule for rule, _ in jobs} == {"finetune_segment", "extract_selftrained", "merge", "evaluate_point",
                                          "aggregate", "all"}


def test_a_wrong_field_gets_one_line_naming_it(tmp_path):
    config = edited_config(tmp_path, lambda c: c["models"]["ddpm"]["finetune"].update(lr="fast"))
    proc = snakemake(tmp_path, "--dry-run", config=config, check=False)
    assert proc.returncode != 0
    assert "config: models.ddpm.finetune.lr: 'fast' is not of type 'number'" in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr


def test_a_missing_dataset_is_named(tmp_path):
    config = edited_config(tmp_path, lambda c: c["models"]["ar"].update(dataset="mnist"))
    proc = snakemake(tmp_path, "--dry-run", config=config, check=False)
    assert proc.returncode != 0
    assert "models.ar.dataset: no dataset named 'mnist'" in proc.stdout + proc.stderr


def per_line(config):
    for model in config["models"].values():
        model["evaluate"]["jobs"] = "per_line"


def test_a_line_job_scores_every_point_as_its_own_jobs_do(tiny_run, tmp_path):
    """evaluate.jobs: per_line merges in memory and draws each w with the same seed and labels:
    the tables are byte-identical to the per-point run's, from one job per (|S|, B, γ)."""
    config = edited_config(tmp_path, per_line)
    workdir = tmp_path / "line"
    jobs = planned_jobs(workdir, config)
    evaluations = sorted(rule for rule, _ in jobs if rule in ("merge", "evaluate_point", "evaluate_line"))
    assert evaluations == ["evaluate_line"] * 3
    snakemake(workdir, "--cores", "2", config=config)
    for table in ("sweep.csv", "table_a1.csv"):
        assert (workdir / "results/tables" / table).read_bytes() == (tiny_run / "results/tables" / table).read_bytes()
    # adding a w reruns the lines of that model only
    (tmp_path / "more").mkdir()
    more = edited_config(tmp_path / "more", lambda c: (per_line(c), c["models"]["ddpm"]["evaluate"]["w"].append(0.25)))
    jobs = planned_jobs(workdir, more)
    assert sorted(rule for rule, _ in jobs) == ["aggregate", "all", "evaluate_line", "evaluate_line"]
    assert {wc["model"] for rule, wc in jobs if rule == "evaluate_line"} == {"ddpm"}
