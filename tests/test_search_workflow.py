"""The (w, γ) search inside the workflow: rounds as checkpoints, a killed search that resumes
without evaluating any point twice, modes sharing points, and the final evaluation."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from conftest import REPO, edited_config, planned_jobs, snakemake

pytestmark = pytest.mark.slow

FINAL_N = 3000


def searching(mode):
    def edit(config):
        for spec in config["models"].values():
            spec["evaluate"]["w"] = {"start": -1, "stop": 1, "step": 0.5}
            spec["evaluate"]["search"] = {"mode": mode, "xtol": 0.05, "max_evals": 10, "final_n": FINAL_N}
        config["models"]["ddpm"]["finetune"]["budgets"] = [0.01]
        config["models"]["ddpm"]["evaluate"]["noise_seeds"] = [4]  # the search's noise floor
    return edit


def fid_jobs(stdout: str) -> list[str]:
    """The fid jobs a snakemake run started, as 'model/S/B/w/gamma'."""
    jobs = []
    for block in re.split(r"\n(?=\s*(?:local)?rule \S+:)", stdout):
        if re.match(r"\s*(?:local)?rule evaluate_point:", block):
            wc = dict(item.split("=", 1) for item in re.search(r"wildcards: (.*)", block).group(1).split(", "))
            jobs.append("/".join(wc[k] for k in ("model", "S", "B", "w", "gamma")))
    return jobs


@pytest.fixture(scope="module")
def killed_and_resumed(tmp_path_factory):
    """A brent search killed (SIGTERM) right after ddpm's first round, then run to the end."""
    workdir = tmp_path_factory.mktemp("search")
    config = edited_config(workdir, searching("brent"))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir),
           "--configfile", str(config), "--cores", "2"]
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    round1 = workdir / "results/search/ddpm/S500/B0.01/round1.json"
    end = time.monotonic() + 300
    while not round1.exists():
        assert first.poll() is None and time.monotonic() < end, "the search never reached round 1"
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGTERM)
    before, _ = first.communicate()
    done_before = {p: p.stat().st_mtime_ns for p in (workdir / "results").glob("*/S*/B*/w*/g*[0-9].json")}
    second = snakemake(workdir, "--cores", "2", "--rerun-incomplete", config=config)
    return workdir, config, before, done_before, second.stdout + second.stderr


def test_a_killed_search_resumes_without_evaluating_a_point_twice(killed_and_resumed):
    workdir, _, before, done_before, after = killed_and_resumed
    assert done_before, "nothing was evaluated before the kill"
    finished = {str(p.relative_to(workdir / "results")) for p in done_before}
    rerun = fid_jobs(after)
    assert rerun and len(rerun) == len(set(rerun))
    for job in rerun:
        model, S, B, w, gamma = job.split("/")
        assert f"{model}/S{S}/B{B}/w{w}/g{gamma}.json" not in finished, f"{job} evaluated twice"
    assert all(p.stat().st_mtime_ns == t for p, t in done_before.items())
    rounds = sorted((workdir / "results/search/ddpm/S500/B0.01").glob("round*.json"))
    assert json.loads(rounds[-1].read_text())["done"]


def test_the_search_chooses_a_point_and_the_final_evaluation_extends_it(killed_and_resumed):
    workdir = killed_and_resumed[0]
    table = pd.read_csv(workdir / "results/tables/table_a1.csv").set_index("model")
    sweep = pd.read_csv(workdir / "results/tables/sweep.csv")
    for model in ["ar", "ddpm"]:
        row = table.loc[model]
        assert row.evaluations <= 10 + 1  # max_evals, and the base
        assert row.n_final == FINAL_N and row.n_final_sampled == FINAL_N - row.n
        assert row.fid_final > 0
        final = json.loads(next((workdir / "results" / model).glob(f"S*/B*/w{row.w:g}/g1.final.json")).read_text())
        assert (final["n_reused"], final["n_sampled"]) == (row.n, FINAL_N - row.n)
        assert row.fid_neon == sweep[sweep.model == model].fid.min()
    last_round = sorted((workdir / "results/search/ddpm/S500/B0.01").glob("round*.json"))[-1]
    noise = json.loads(last_round.read_text())["noise"]
    assert noise > 0  # measured from the base at two seeds
    assert planned_jobs(workdir, killed_and_resumed[1]) == []


def test_another_mode_reuses_every_point_already_evaluated(killed_and_resumed, tmp_path):
    workdir, _, _, _, _ = killed_and_resumed
    evaluated = {str(p.relative_to(workdir / "results")) for p in (workdir / "results").glob("*/S*/B*/w*/g*[0-9].json")}
    config = edited_config(tmp_path, searching("quadratic"))
    proc = snakemake(workdir, "--cores", "2", config=config)
    jobs = fid_jobs(proc.stdout + proc.stderr)
    assert jobs, "the quadratic search evaluated nothing new"
    for job in jobs:
        model, S, B, w, gamma = job.split("/")
        assert f"{model}/S{S}/B{B}/w{w}/g{gamma}.json" not in evaluated


def test_a_dry_run_shows_the_first_round_only(tmp_path):
    """Before round 0 has run, the points of the search are unknown: a dry run lists the jobs up
    to each search's round 0 (with the base's fid jobs it reads), and the aggregate with inputs
    to be determined; every later round appears once the one before it has run."""
    config = edited_config(tmp_path, searching("brent"))
    jobs = planned_jobs(tmp_path, config)
    rounds = sorted((wc["model"], wc["k"]) for rule, wc in jobs if rule == "search_round")
    assert rounds == [("ar", "0"), ("ddpm", "0")]
    assert {wc["w"] for rule, wc in jobs if rule == "evaluate_point"} == {"0"}
    assert "evaluate_final" not in {rule for rule, _ in jobs}
    out = snakemake(tmp_path, "--dry-run", config=config).stdout
    assert "checkpoint jobs" in out and "<TBD>" in out
