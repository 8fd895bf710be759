"""The paper's experiments as configs (config/paper/): each validates, all of them together
dry-run within 30 s with the expected jobs, and running one whose codebase has no adapter stops
with one line naming what is missing."""
import re
import time
import zipfile

import pytest
import yaml

from conftest import REPO, snakemake
from neon_steps import config as neon_config
from neon_steps.models import knobs

PAPER = sorted((REPO / "config" / "paper").glob("*.yaml"))

# Jobs of a dry run of all paper configs together, by rule, before any search round has run. Per
# model: each |S| drawn by its part jobs (synthetic.images_per_job: the 750k sets of xAR and VAR are
# 30-32 jobs each) and listed by a gather job, |S|·|B| fine-tune segments (and ckpt) and searches; a search's round 0
# (search_round) waits for the base (w = 0: no merge) at every γ (fid) and for θ_s (ckpt, so that S
# and the fine-tune start beside the base's evaluations); fid_noise evaluates the
# base at the noise seeds, at every γ. IMM's T = 4, 2, 1 models evaluate T = 8's training, so they
# add searches only. Later rounds' points appear once the rounds before them have run.
PAPER_JOBS = {"prepare_base": 9, "reference_statistics": 4, "sample_synthetic": 141, "gather_synthetic": 21,
              "finetune_segment": 122,
              "extract_selftrained": 122, "search_round": 134,
              "evaluate_point": 438, "evaluate_noise_seed": 52, "aggregate": 1, "all": 1}


def load(path):
    config = neon_config.load(path)
    config["models"] = neon_config.resolve_models(config["models"])
    neon_config.validate(config)
    neon_config.check_models(config["models"], config["datasets"])
    return config


def test_there_is_one_config_per_paper_experiment():
    assert [p.stem for p in PAPER] == [
        "edm-cifar10-cond", "edm-cifar10-uncond", "edm-ffhq64", "fm-cifar10", "imm-imagenet256",
        "var-d16-imagenet256", "var-d36-imagenet512", "xar-b-imagenet256", "xar-l-imagenet256"]


@pytest.mark.parametrize("path", PAPER, ids=lambda p: p.stem)
def test_paper_config_validates_and_names_user_files(path):
    config = load(path)
    for name, dataset in config["datasets"].items():
        assert dataset["kind"] == "inception"
        for field in ("inception_weights", "statistics"):
            assert not (REPO / dataset[field]).exists()  # the user's, not the repository's
    for name, model in config["models"].items():
        assert "checkpoint" in model["base"] and model["base"]["images"] > 0
        assert model["evaluate"]["n"] == 10000 and model["evaluate"]["search"]["final_n"] == 50000
        assert model["evaluate"]["search"]["mode"] in {"brent", "quadratic"} and model["evaluate"]["noise_seeds"]
        assert set(model["resources"]) >= {"sample", "finetune", "fid"}
        assert model["finetune"]["save_every_images"] == 250000


def test_paper_settings_are_the_appendix_c_ones():
    edm = load(REPO / "config/paper/edm-cifar10-cond.yaml")["models"]["edm-cifar10-cond"]
    # EDM's sampler at its defaults, which the config's settings are (written as the adapter's knobs)
    assert {k: knobs.EDM[1](edm["synthetic"]["kappa"])[k] for k in ("steps", "rho", "S_churn")} == {
        "steps": 18, "rho": 7, "S_churn": 0}
    assert edm["finetune"]["lr"] == 1e-4
    assert neon_config.w_grid(edm)[0] == 0 and neon_config.w_grid(edm)[-1] == 3
    var = load(REPO / "config/paper/var-d16-imagenet256.yaml")["models"]["var-d16-imagenet256"]
    assert var["synthetic"]["kappa"] == {"cfg": 1.25, "top_k": 900, "top_p": 0.95}
    assert var["finetune"]["warmup_images"] == 7_500_000 and var["finetune"]["lr"] == 1e-5
    imm = load(REPO / "config/paper/imm-imagenet256.yaml")["models"]
    assert {m["evaluate"]["kappa"]["T"] for m in imm.values()} == {1, 2, 4, 8}
    assert {m.get("training_of", name) for name, m in imm.items()} == {"imm-t8"}


def test_a_missing_user_file_field_is_named(tmp_path):
    config = yaml.safe_load((REPO / "config/paper/fm-cifar10.yaml").read_text())
    del config["datasets"]["cifar10"]["statistics"]
    with pytest.raises(neon_config.ConfigError, match="datasets.cifar10: 'statistics' is a required property"):
        neon_config.validate(config)


def test_all_paper_configs_dry_run_together_within_30s(tmp_path):
    start = time.monotonic()
    proc = snakemake(tmp_path, "--dry-run", "--quiet", "rules", config=PAPER[0],
                     extra_configs=PAPER[1:])
    seconds = time.monotonic() - start
    stats = dict(re.findall(r"^(\w+)\s+(\d+)$", proc.stdout.split("Job stats:")[1], re.M))
    assert {rule: int(n) for rule, n in stats.items() if rule != "total"} == PAPER_JOBS
    assert int(stats["total"]) == sum(PAPER_JOBS.values())
    assert seconds <= 30, f"dry run of {stats['total']} jobs took {seconds:.1f} s"


def test_xar_l_draws_its_750k_S_in_tens_of_jobs(tmp_path):
    config = REPO / "config/paper/xar-l-imagenet256.yaml"
    proc = snakemake(tmp_path, "--dry-run", "results/xar-l-imagenet256/S750000/synthetic/manifest.json", config=config)
    part = r"^\s+output: results/xar-l-imagenet256/S750000/synthetic/part(\d+)\.safetensors$"
    parts = re.findall(part, proc.stdout, re.M)
    assert sorted(map(int, parts)) == list(range(30))  # 25k images a job
    assert re.search(r"^gather_synthetic\s+1$", proc.stdout, re.M)


def test_a_codebase_without_adapter_stops_with_one_line(tmp_path):
    """The VAR-d16 config with its files present: a dry run plans it, a run stops before its first
    job and says what to write."""
    config = yaml.safe_load((REPO / "config/paper/var-d16-imagenet256.yaml").read_text())
    for field in ("checkpoint", "vae"):
        if field in config["models"]["var-d16-imagenet256"]["base"]:
            path = tmp_path / f"{field}.pth"
            with zipfile.ZipFile(path, "w") as archive:  # a torch.save file, as far as a dry run looks
                archive.writestr("archive/data.pkl", b"")
            config["models"]["var-d16-imagenet256"]["base"][field] = str(path)
    for field in ("inception_weights", "statistics"):
        path = tmp_path / f"{field}.zip"
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("x", b"")
        config["datasets"]["imagenet256"][field] = str(path)
    path = tmp_path / "var.yaml"
    path.write_text(yaml.safe_dump(config))
    snakemake(tmp_path, "--dry-run", "results/var-d16-imagenet256/base.safetensors", config=path)
    proc = snakemake(tmp_path, "--cores", "1", "results/var-d16-imagenet256/base.safetensors",
                     config=path, check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert ("config: models.var-d16-imagenet256.adapter: no adapter for the VAR codebase (FoundationVision/VAR) "
            "yet; write one (docs/adapters.md) and set adapter: package.module:Class") in proc.stderr.splitlines()
    assert not (tmp_path / "results/logs/prepare_base").exists()  # no job started


def test_training_of_must_share_the_training(tmp_path):
    config = yaml.safe_load((REPO / "config/paper/imm-imagenet256.yaml").read_text())
    config["models"]["imm-t4"]["finetune"] = {"lr": 1e-5}
    config["models"] = neon_config.resolve_models(config["models"])
    neon_config.validate(config)
    with pytest.raises(neon_config.ConfigError, match="models.imm-t4.training_of: finetune differs from 'imm-t8'"):
        neon_config.check_models(config["models"], config["datasets"])
    config["models"]["imm-t4"]["finetune"] = dict(config["models"]["imm-t8"]["finetune"], budgets=[0.5])
    neon_config.check_models(config["models"], config["datasets"])  # a sub-grid of budgets is fine
    config["models"]["imm-t4"]["training_of"] = "imm-t9"
    with pytest.raises(neon_config.ConfigError, match="models.imm-t4.training_of: no model named 'imm-t9'"):
        neon_config.check_models(config["models"], config["datasets"])
