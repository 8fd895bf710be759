"""Killed jobs resume: a fine-tune from its last saved state, a sampling job from its finished
shards, a whole killed workflow with --rerun-incomplete; the results are the same bits."""
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from conftest import TINY, snakemake
from neon_steps.io import load_tensors


def config_file(tmp_path: Path, **finetune) -> Path:
    config = yaml.safe_load(TINY.read_text())
    config["models"]["ddpm"]["finetune"].update(finetune)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def stage(module: str, config: Path, *args: str, **popen) -> subprocess.Popen:
    cmd = [sys.executable, "-m", f"neon_steps.{module}", "--config", str(config), "--model", "ddpm", *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


def run(module, config, *args) -> str:
    proc = stage(module, config, *args)
    output, _ = proc.communicate()
    assert proc.returncode == 0, output
    return output


def kill_when(proc: subprocess.Popen, ready, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, f"finished before it could be killed:\n{proc.stdout.read()}"
        assert time.monotonic() < end, "never became ready to kill"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def assert_same_tensors(a: Path, b: Path) -> None:
    ta, tb = load_tensors(a), load_tensors(b)
    assert ta.keys() == tb.keys()
    for name in ta:
        assert torch.equal(ta[name], tb[name]), name


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("resume")
    # A long segment (4,000 steps at batch 50) with a resume point every 100 steps.
    config = config_file(folder, batch_size=50, save_every_images=5000)
    run("base", config, "--out", str(folder / "base.safetensors"))
    run("sample", config, "--size", "500", "--base", str(folder / "base.safetensors"),
        "--out", str(folder / "S.safetensors"))
    return folder, config


def test_a_killed_finetune_resumes_bit_for_bit(inputs, tmp_path):
    folder, config = inputs
    args = ["--budget", "0.2", "--synthetic", str(folder / "S.safetensors"),
            "--start", str(folder / "base.safetensors")]
    run("finetune", config, *args, "--out", str(tmp_path / "straight.state.safetensors"))

    out = tmp_path / "killed.state.safetensors"
    resume = Path(f"{out}.resume")
    kill_when(stage("finetune", config, *args, "--out", str(out)), resume.exists)
    assert resume.exists() and not out.exists()  # no partial output, a resume point instead

    log = run("finetune", config, *args, "--out", str(out))
    assert "resuming at" in log
    assert_same_tensors(out, tmp_path / "straight.state.safetensors")
    assert not resume.exists()


def test_a_stale_resume_point_is_not_used(inputs, tmp_path):
    folder, config = inputs
    args = ["--budget", "0.01", "--synthetic", str(folder / "S.safetensors"),
            "--start", str(folder / "base.safetensors")]
    out = tmp_path / "B.state.safetensors"
    run("finetune", config, *args, "--out", str(tmp_path / "straight.state.safetensors"))
    other = config_file(tmp_path, batch_size=50, save_every_images=5000, lr=5e-4)  # a different recipe
    kill_when(stage("finetune", other, "--budget", "0.2", *args[2:], "--out", str(out)), Path(f"{out}.resume").exists)
    log = run("finetune", config, *args, "--out", str(out))
    assert "resuming" not in log
    assert_same_tensors(out, tmp_path / "straight.state.safetensors")


def test_a_killed_sampling_job_draws_only_the_missing_shards(inputs, tmp_path):
    folder, config = inputs
    base = str(folder / "base.safetensors")
    cfg = yaml.safe_load(config.read_text())
    cfg["models"]["ddpm"]["synthetic"]["shard_size"] = 100
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(cfg))
    run("sample", config, "--size", "60000", "--base", base, "--out", str(tmp_path / "straight.safetensors"))

    out = tmp_path / "killed.safetensors"
    shards = Path(f"{out}.shards")
    kill_when(stage("sample", config, "--size", "60000", "--base", base, "--out", str(out)),
              lambda: len(list(shards.glob("shard*.safetensors"))) >= 5)
    assert not out.exists()
    log = run("sample", config, "--size", "60000", "--base", base, "--out", str(out))
    assert "shards already drawn" in log
    assert_same_tensors(out, tmp_path / "straight.safetensors")
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
