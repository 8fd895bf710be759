"""A fine-tune segment on G processes (resources.finetune.gpu: G; here G CPU processes with gloo)
trains as one process does, to float rounding; a killed one resumes; a rank's mistake fails the
job with its one line; the dry run names a batch that G GPUs cannot share."""
import re
import time
from pathlib import Path

import pytest
import torch

from conftest import TINY, TOY_DDPM, edited_config, snakemake, tiny_config
from neon_steps import config as neon_config
from neon_steps import distributed
from neon_steps.errors import ConfigError, NeonError
from neon_steps.finetune import finetune_segment
from neon_steps.io import load_metadata, load_tensors
from neon_steps.models import load_adapter
from neon_steps.synthetic import SyntheticSet, write_manifest, write_part
from neon_steps.training import Recipe, _StepBatches, batch_indices
from test_resume import assert_same_tensors, copy_run, kill_when, rerun, start

TESTS = Path(__file__).resolve().parent


def toy_S(folder: Path) -> Path:
    """200 2-D points in two parts, as two sample jobs write S; its manifest."""
    points = torch.randn(200, 2, generator=torch.Generator().manual_seed(1))
    parts = [str(folder / "part0.safetensors"), str(folder / "part1.safetensors")]
    write_part(parts[0], points[:120].split(50), 120, None, {})
    write_part(parts[1], points[120:].split(50), 80, None, {})
    write_manifest(folder / "manifest.json", parts)
    return folder / "manifest.json"


def toy_model(**finetune) -> dict:
    return {"name": "toy", **TOY_DDPM, "finetune": {"lr": 1e-3, "batch_size": 32, "seed": 2, **finetune}}


def test_each_rank_reads_its_own_chunks_of_the_batch(tmp_path):
    S = SyntheticSet(toy_S(tmp_path))
    recipe = Recipe(lr=1e-3, batch_size=32, seed=2, micro_batch=8)
    batch = batch_indices(3, len(S), 32, 2)
    rank0, rank1 = (_StepBatches(S, 3, 4, recipe, rank, 2)[0] for rank in (0, 1))
    assert [chunk.index for chunk in rank0] == [0, 2] and [chunk.index for chunk in rank1] == [1, 3]
    for chunk in rank0 + rank1:
        assert torch.equal(chunk.samples, S.take(batch[8 * chunk.index:8 * (chunk.index + 1)])[0])
        assert chunk.weight == 0.25


def test_two_processes_train_as_one(tmp_path, one_thread):
    model = toy_model(micro_batch=8)  # 4 chunks a batch: 2 for each rank
    S = toy_S(tmp_path)
    torch.manual_seed(0)
    load_adapter(model).save(tmp_path / "base.safetensors")
    states = {}
    for gpus in (1, 2):
        states[gpus] = tmp_path / f"G{gpus}.state.safetensors"
        finetune_segment(model, 12 * 32 / 1e6, str(S), str(tmp_path / "base.safetensors"), str(states[gpus]),
                         gpus=gpus)
    one, two = load_tensors(states[1]), load_tensors(states[2])
    assert one.keys() == two.keys()
    for name in one:
        assert torch.allclose(one[name], two[name], atol=1e-6, rtol=0), name
    assert load_metadata(states[1]) == load_metadata(states[2])  # step 12, the same recipe
    assert not Path(f"{states[2]}.resume").exists()


def fail_on_rank_1() -> None:
    """Rank 1 makes a mistake while rank 0 waits for it, forever unless it is stopped."""
    if distributed.rank() == 1:
        raise NeonError("rank 1: a mistake")
    distributed.barrier()


def test_a_rank_that_fails_fails_the_job_with_its_line(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(TESTS))  # the ranks import this module's function
    started = time.monotonic()
    with pytest.raises(NeonError, match=r"^rank 1: a mistake$"):
        distributed.launch(2, fail_on_rank_1)
    assert time.monotonic() - started < 60  # rank 0 was stopped, not waited for


def test_the_dry_run_names_a_batch_that_the_gpus_cannot_share():
    def mistakes(finetune, gpu=2):
        config = tiny_config()
        config["models"]["ddpm"]["finetune"].update(finetune)
        config["models"]["ddpm"]["resources"] = {"finetune": {"gpu": gpu}}
        try:
            neon_config.prepare(config)
        except ConfigError as err:
            return err.mistakes
        return config

    assert mistakes({}) == [
        "models.ddpm.resources.finetune.gpu: 2 GPUs share a batch of 1 chunk (finetune.batch_size 500 / "
        "micro_batch 500): the chunks must be a multiple of 2; e.g. finetune.micro_batch: 250"]
    assert mistakes({"micro_batch": 100}) == [
        "models.ddpm.resources.finetune.gpu: 2 GPUs share a batch of 5 chunks (finetune.batch_size 500 / "
        "micro_batch 100): the chunks must be a multiple of 2; e.g. finetune.micro_batch: 250"]
    assert mistakes({"micro_batch": 300}) == [
        "models.ddpm.finetune.micro_batch: a batch is split into chunks of micro_batch images, so it must divide "
        "finetune.batch_size (500), not 300"]
    assert mistakes({"micro_batch": 125})["models"]["ddpm"]["finetune"]["micro_batch"] == 125  # 4 chunks
    # micro_batch written out at its default (the whole batch) is left out: it reruns nothing
    assert "micro_batch" not in mistakes({"micro_batch": 500}, gpu=1)["models"]["ddpm"]["finetune"]


# -- through the workflow: resources.finetune.gpu: 2 -------------------------------------------------
BUDGET = 0.02
STATE = f"results/ddpm/S500/finetune/B{neon_config.fmt(BUDGET)}.state.safetensors"
LOG = f"results/logs/finetune_segment/ddpm/S500/finetune/B{neon_config.fmt(BUDGET)}.log"


def two_gpus(config) -> None:
    """ddpm's segment to BUDGET (400 steps of 50 in chunks of 25) on 2 processes, a resume point
    every 50 steps."""
    config["models"]["ddpm"]["finetune"].update(batch_size=50, micro_batch=25, save_every_images=2500,
                                                budgets=[BUDGET])
    config["models"]["ddpm"]["resources"] = {"finetune": {"gpu": 2}}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A working directory with ddpm's base and S made, and the 2-process config."""
    folder = tmp_path_factory.mktemp("ddp")
    config = edited_config(folder, two_gpus, source=TINY)
    workdir = folder / "inputs"
    snakemake(workdir, "--cores", "1", "results/ddpm/S500/synthetic/manifest.json", config=config)
    return workdir, config


@pytest.mark.slow  # workflow runs
def test_a_killed_two_process_segment_resumes_bit_for_bit(inputs, tmp_path):
    workdir, config = inputs
    straight = copy_run(workdir, tmp_path / "straight")
    proc = snakemake(straight, "--cores", "2", STATE, config=config)
    run = proc.stdout + proc.stderr
    assert re.search(r"rule finetune_segment:(\n\s+.*)*\n\s+threads: 2\n", run), run  # a core for each rank
    assert "2 processes (gloo) on this node" in (straight / LOG).read_text()

    killed = copy_run(workdir, tmp_path / "killed")
    out = killed / STATE
    resume = Path(f"{out}.resume")
    kill_when(start(killed, config, STATE), resume.exists)
    assert resume.exists() and not out.exists()
    log = rerun(killed, config, STATE)
    assert "resuming at" in log and "2 processes" in log, log
    assert_same_tensors(out, straight / STATE)
    assert not resume.exists()
