"""Killed jobs resume: a fine-tune from its last saved state, a sampling job from its finished
shards, a whole killed workflow with --rerun-incomplete; the results are the same bits."""
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import REPO, SNAKEMAKE, TINY, edited_config, snakemake
from neon_steps.config import fmt
from neon_steps.io import load_tensors

BUDGET = 0.2
STATE = f"results/ddpm/S500/finetune/B{fmt(BUDGET)}.state.safetensors"  # the fine-tune of ddpm at |S| = 500
LARGE_S = 60000  # 600 shards of 100 samples
SYNTHETIC = "results/ddpm/S{S}/synthetic/manifest.json"  # S, listing its parts
PART = "results/ddpm/S{S}/synthetic/part0.safetensors"


def long_segment(config) -> None:
    """One long segment (4,000 steps at batch 50, from the base) with a resume point every 100 steps."""
    config["models"]["ddpm"]["finetune"].update(batch_size=50, save_every_images=5000, budgets=[BUDGET])


def copy_run(workdir: Path, to: Path) -> Path:
    """A copy of a working directory that snakemake sees as the same run: mtimes and snakemake's
    records kept, so nothing it has done is planned again."""
    shutil.copytree(workdir, to, symlinks=True)
    return to


def planned(workdir: Path, config: Path, target: str, *args: str) -> list[tuple[str, str]]:
    """The jobs a dry run for `target` would run: (rule, output) for each."""
    proc = snakemake(workdir, "--dry-run", target, *args, config=config)
    job = r"^\s*(?:local)?(?:rule|checkpoint) (\S+):\n(?:\s+input: .*\n)?\s+output: (.*)$"
    return re.findall(job, proc.stdout, re.M)


def only_job_planned(workdir: Path, config: Path, target: str, *args: str) -> None:
    """A dry run for `target` plans its own job alone: the shared base and S are not made again."""
    jobs = planned(workdir, config, target, *args)
    assert [output for _rule, output in jobs] == [target], jobs


def start(workdir: Path, config: Path, target: str) -> subprocess.Popen:
    """snakemake making `target`, in a session of its own: killing that kills its job too."""
    cmd = [*SNAKEMAKE, "-s", str(REPO / "Snakefile"), "-d", str(workdir), "--configfile", str(config),
           "--cores", "1", target]
    output = workdir.parent / f"{workdir.name}.out"
    with open(output, "w") as stream:
        proc = subprocess.Popen(cmd, stdout=stream, stderr=subprocess.STDOUT, start_new_session=True)
    proc.output = output
    return proc


def kill_when(proc: subprocess.Popen, ready, timeout: float = 120) -> None:
    """SIGKILL snakemake and the job it runs as soon as `ready()`."""
    end = time.monotonic() + timeout
    while not ready():
        finished = proc.poll() is not None
        if finished or time.monotonic() > end:
            if not finished:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            pytest.fail(f"{'finished before it could be killed' if finished else 'never became ready to kill'}:\n"
                        f"{proc.output.read_text()[-3000:]}")
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # snakemake and its job
    proc.wait()


def rerun(workdir: Path, config: Path, target: str) -> str:
    """Make a killed `target` again as a user would; the log of its job."""
    snakemake(workdir, "--unlock", config=config)  # a SIGKILLed snakemake cannot release its lock
    only_job_planned(workdir, config, target, "--rerun-incomplete")
    proc = snakemake(workdir, "--cores", "1", "--rerun-incomplete", target, config=config)
    # The job's log, as snakemake names it beside the job's output (whatever the rule's name).
    log = re.search(rf"^\s+output: {re.escape(target)}\n\s+log: (\S+)$", proc.stdout + proc.stderr, re.M)
    assert log, proc.stdout[-3000:] + proc.stderr[-3000:]
    return (workdir / log.group(1)).read_text()


def assert_same_tensors(a: Path, b: Path) -> None:
    ta, tb = load_tensors(a), load_tensors(b)
    assert ta.keys() == tb.keys()
    for name in ta:
        assert torch.equal(ta[name], tb[name]), name


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A working directory with ddpm's base and S (|S| = 500) made, and its config."""
    folder = tmp_path_factory.mktemp("resume")
    config = edited_config(folder, long_segment)
    workdir = folder / "inputs"
    snakemake(workdir, "--cores", "1", SYNTHETIC.format(S=500), config=config)
    return workdir, config


@pytest.fixture(scope="module")
def straight(inputs, tmp_path_factory) -> Path:
    """The fine-tune state at BUDGET, made without interruption from the inputs' base and S."""
    workdir, config = inputs
    straight = copy_run(workdir, tmp_path_factory.mktemp("straight") / "run")
    only_job_planned(straight, config, STATE)
    snakemake(straight, "--cores", "1", STATE, config=config)
    return straight / STATE


@pytest.mark.slow  # workflow runs
def test_a_killed_finetune_resumes_bit_for_bit(inputs, straight, tmp_path):
    workdir, config = inputs
    killed = copy_run(workdir, tmp_path / "killed")
    only_job_planned(killed, config, STATE)
    out = killed / STATE
    resume = Path(f"{out}.resume")
    kill_when(start(killed, config, STATE), resume.exists)
    assert resume.exists() and not out.exists()  # no partial output, a resume point instead

    log = rerun(killed, config, STATE)
    assert "resuming at" in log
    assert_same_tensors(out, straight)
    assert not resume.exists()


@pytest.mark.slow  # workflow runs
def test_a_stale_resume_point_is_not_used(inputs, straight, tmp_path):
    workdir, config = inputs
    killed = copy_run(workdir, tmp_path / "killed")
    out = killed / STATE
    resume = Path(f"{out}.resume")
    other = edited_config(tmp_path, lambda c: c["models"]["ddpm"]["finetune"].update(lr=5e-4), source=config)
    only_job_planned(killed, other, STATE)
    kill_when(start(killed, other, STATE), resume.exists)  # a resume point of a different recipe
    assert resume.exists() and not out.exists()

    log = rerun(killed, config, STATE)  # the first recipe again
    assert "resuming" not in log
    assert_same_tensors(out, straight)
    assert not resume.exists()


@pytest.mark.slow  # workflow runs
def test_a_killed_sampling_job_draws_only_the_missing_shards(inputs, tmp_path):
    workdir, config = inputs
    config = edited_config(tmp_path, lambda c: c["models"]["ddpm"]["synthetic"].update(
        shard_size=100, sizes=[500, LARGE_S]), source=config)
    target = PART.format(S=LARGE_S)
    runs = {name: copy_run(workdir, tmp_path / name) for name in ("straight", "killed")}
    for run in runs.values():
        only_job_planned(run, config, target)  # the base is not made again
    snakemake(runs["straight"], "--cores", "1", target, config=config)

    out = runs["killed"] / target
    shards = Path(f"{out}.shards")
    kill_when(start(runs["killed"], config, target), lambda: len(list(shards.glob("shard*.safetensors"))) >= 5)
    assert not out.exists()
    log = rerun(runs["killed"], config, target)
    assert "shards already drawn" in log
    assert_same_tensors(out, runs["straight"] / target)
    assert not shards.exists()


@pytest.mark.slow
def test_a_killed_workflow_finishes_with_rerun_incomplete(tiny_run, tmp_path):
    cmd = [sys.executable, "-m", "snakemake", "-s", str(TINY.parents[2] / "Snakefile"), "-d", str(tmp_path),
           "--configfile", str(TINY), "--cores", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    time.sleep(random.uniform(4, 25))
    os.killpg(proc.pid, signal.SIGKILL)  # snakemake and every job it started
    proc.wait()
    # A SIGKILLed snakemake cannot release its lock (a killed job, Ctrl-C or SIGTERM can).
    snakemake(tmp_path, "--unlock")
    snakemake(tmp_path, "--cores", "2", "--rerun-incomplete")
    for table in ["sweep.csv", "table_a1.csv"]:
        assert (tmp_path / "results/tables" / table).read_bytes() == (tiny_run / "results/tables" / table).read_bytes()
