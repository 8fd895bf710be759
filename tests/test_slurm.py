"""The workflow through `--profile profiles/slurm` on a real (single-node) SLURM cluster.

Needs root on Debian 12: scripts/slurm/start-cluster.sh installs and starts SLURM, munge,
slurmdbd and MariaDB on this machine, and stop-cluster.sh stops them after the tests.
Part of the full suite (pytest --full), as root on Debian. One workflow run serves all tests here; during it one sample
or finetune job is cancelled with scancel, which the profile's retries must absorb. The config is
the tiny one with the shapes of a paper run on one of its models: S drawn by two jobs, each
evaluation by two part jobs and a scoring job, and the fine-tune on 2 GPUs (2 processes); the
results must equal the same config run locally.
"""
import math
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import torch
import yaml

import slurm_cluster
from conftest import edited_config, snakemake
from neon_steps.io import load_tensors

pytestmark = [
    pytest.mark.slurm,
    pytest.mark.skipif(os.geteuid() != 0 or not Path("/etc/debian_version").exists(),
                       reason="starts a SLURM cluster: root on Debian only"),
]

REPO = slurm_cluster.REPO
PROFILE = REPO / "profiles" / "slurm"
GPU_RULES = {"prepare_base", "sample_synthetic", "finetune_segment", "evaluate_point", "evaluate_point_part"}
FANNED_OUT = "ddpm"
FINETUNE_GPUS = 2
GROUP = "evaluate"  # merge and evaluate_point of one (w) point
WORKFLOW = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--profile", str(PROFILE)]


def paper_shapes(config):
    """ddpm as a paper model is run: S (500) drawn by 2 jobs, each evaluation (n = 1,000) by 2 part
    jobs, and each fine-tune segment on 2 GPUs, a chunk of the batch each."""
    model = config["models"][FANNED_OUT]
    model["synthetic"].update(shard_size=100, images_per_job=300)
    model["evaluate"].update(shard_size=250, images_per_job=500)
    model["finetune"].update(micro_batch=250)
    model["resources"] = {"finetune": {"gpu": FINETUNE_GPUS}}


def gpus_wanted(rule, wildcards) -> int:
    """The GPUs a SLURM job running one job of `rule` must hold."""
    fanned_out = dict(wildcards).get("model") == FANNED_OUT
    if rule == "finetune_segment" and fanned_out:
        return FINETUNE_GPUS
    if rule == "evaluate_point" and fanned_out:  # scores its parts' features: no GPU
        return 0
    return int(rule in GPU_RULES)
# What the test cluster changes in the profile: first status check after 2 s, not 40 (the jobs
# take seconds), and keep the SLURM log of every job, to see which workflow jobs each one ran.
TEST_CLUSTER = ["--slurm-init-seconds-before-status-checks", "2", "--slurm-keep-successful-logs"]
RUN_TIMEOUT_S = 900  # about 5 minutes on an idle machine; twice that when it is shared


@pytest.fixture(scope="module")
def cluster():
    try:
        slurm_cluster.start()
        yield
    finally:
        slurm_cluster.stop()


class SlurmRun:
    """One run of the workflow through the profile: its output, its jobs as SLURM accounted them."""

    def __init__(self, workdir: Path, planned, log: str, cancelled: int | None):
        self.workdir, self.planned, self.log, self.cancelled = workdir, planned, log, cancelled
        self.run_id = slurm_cluster.run_id(log)
        self.submitted = slurm_cluster.submissions(log)
        self.jobs = slurm_cluster.accounted_jobs(self.run_id)

    def ran_in(self, job: slurm_cluster.SlurmJob):
        """The workflow jobs that SLURM job ran, from its SLURM log."""
        return slurm_cluster.executed_jobs(self.submitted[job.id].read_text())


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> Path:
    return edited_config(tmp_path_factory.mktemp("config"), paper_shapes)


@pytest.fixture(scope="module")
def local_run(config, tmp_path_factory) -> Path:
    """The same config run here, without SLURM: what the cluster's results must equal."""
    workdir = tmp_path_factory.mktemp("local")
    snakemake(workdir, "--cores", "2", config=config)
    return workdir


@pytest.fixture(scope="module")
def slurm_run(cluster, config, tmp_path_factory) -> SlurmRun:
    workdir = tmp_path_factory.mktemp("slurm")
    dry_run = subprocess.run([*WORKFLOW, "--configfile", str(config), "-d", str(workdir), "--dry-run"],
                             capture_output=True, text=True)
    assert dry_run.returncode == 0, dry_run.stdout + dry_run.stderr
    log_file = workdir / "snakemake.log"
    canceller = slurm_cluster.JobCanceller(log_file, prefixes=("rule_sample_synthetic_", "rule_finetune_segment_"))
    canceller.start()
    started = time.monotonic()
    with open(log_file, "w") as log:
        proc = subprocess.Popen([*WORKFLOW, "--configfile", str(config), *TEST_CLUSTER, "-d", str(workdir)],
                                cwd=workdir, stdout=log,
                                stderr=subprocess.STDOUT)
        try:
            returncode = proc.wait(timeout=RUN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.terminate()  # snakemake cancels its SLURM jobs on the way out
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            returncode = None
        finally:
            canceller.finished.set()
            canceller.join()
    output = log_file.read_text()
    seconds = time.monotonic() - started
    assert returncode == 0, f"snakemake --profile slurm: exit {returncode} after {seconds:.0f} s\n{output[-6000:]}"
    return SlurmRun(workdir, slurm_cluster.planned_jobs(dry_run.stdout), output, canceller.cancelled)


def test_every_non_local_job_ran_as_a_slurm_job(slurm_run):
    # Every submission is in SLURM's accounting, as a job of this run.
    assert {job.id for job in slurm_run.jobs} == set(slurm_run.submitted)
    local = slurm_cluster.executed_jobs(slurm_run.log)
    # the aggregate, and each S's manifest (gather_synthetic reads its parts' headers)
    assert sorted(rule for rule, _ in local) == ["aggregate", "all", "gather_synthetic", "gather_synthetic"]
    in_slurm = []
    for job in slurm_run.jobs:
        if job.state != "COMPLETED":
            continue
        ran = slurm_run.ran_in(job)
        rules = sorted({rule for rule, _ in ran})
        if len(ran) == 1:
            rule, wildcards = ran[0]
            values = "_".join(value for _, value in wildcards)
            assert job.comment == f"rule_{rule}" + (f"_wildcards_{values}" if values else "")
        else:
            # merge and evaluate_point of several (w) points, batched by the profile's group-components
            assert rules == ["evaluate_point", "merge"] and job.comment == f"rule_{GROUP}_evaluate_point_merge"
        in_slurm += ran
    # The planned jobs, each run once: in SLURM, or here if local.
    assert Counter(in_slurm) + Counter(local) == Counter(slurm_run.planned)


def test_gpu_rules_got_their_gpus_and_the_others_none(slurm_run):
    completed = [job for job in slurm_run.jobs if job.state == "COMPLETED"]
    for job in completed:
        assert job.gpus == max(gpus_wanted(*ran) for ran in slurm_run.ran_in(job)), (job, slurm_run.ran_in(job))
    segments = [job for job in completed if job.comment.startswith(f"rule_finetune_segment_wildcards_{FANNED_OUT}")]
    held = Counter(job.gpus for job in segments)
    assert held == {FINETUNE_GPUS: 2}, held  # both segments of ddpm held 2 GPUs, as sacct says


def test_S_and_evaluations_were_drawn_by_several_jobs(slurm_run):
    ran = Counter(rule for job in slurm_run.jobs if job.state == "COMPLETED" for rule, _ in slurm_run.ran_in(job))
    assert ran["sample_synthetic"] == 2 + 1  # ddpm's S in two parts, ar's in one
    points = sum(1 for rule, wildcards in slurm_run.planned
                 if rule == "evaluate_point" and dict(wildcards)["model"] == FANNED_OUT)
    assert ran["evaluate_point_part"] == 2 * points > 0  # each point of ddpm (the base's too): two parts


def test_evaluate_points_were_batched(slurm_run):
    batch = yaml.safe_load((PROFILE / "config.yaml").read_text())["group-components"][GROUP]
    points = sum(1 for rule, _ in slurm_run.planned if rule == "merge")
    # A group's comment names its rules, not wildcards (evaluate_point_part jobs are not grouped).
    groups = [job for job in slurm_run.jobs
              if job.comment.startswith(f"rule_{GROUP}_") and "_wildcards_" not in job.comment]
    assert len(groups) == math.ceil(points / batch) < points


def test_a_job_cancelled_mid_way_is_retried(slurm_run):
    assert slurm_run.cancelled is not None, "no sample or finetune job was seen running"
    cancelled = [job for job in slurm_run.jobs if job.state.startswith("CANCELLED")]
    assert [job.id for job in cancelled] == [slurm_run.cancelled]
    retries = [job for job in slurm_run.jobs if job.comment == cancelled[0].comment and job.id != cancelled[0].id]
    assert [job.state for job in retries] == ["COMPLETED"]
    assert retries[0].id > cancelled[0].id
    assert cancelled[0].comment.startswith(("rule_sample_synthetic_", "rule_finetune_segment_"))


def test_results_match_a_local_run(slurm_run, local_run):
    for table in ["results/tables/sweep.csv", "results/tables/table_a1.csv"]:
        assert (slurm_run.workdir / table).read_text() == (local_run / table).read_text(), table
    for state in ["results/ddpm/S500/finetune/B0.01.state.safetensors",  # after 2 segments on 2 GPUs
                  "results/ddpm/S500/synthetic/part1.safetensors"]:
        ours, theirs = load_tensors(slurm_run.workdir / state), load_tensors(local_run / state)
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours), state
