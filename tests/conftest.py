import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]


# -- the fast suite and the full one ----------------------------------------------------------------
def pytest_addoption(parser):
    parser.addoption("--full", action="store_true",
                     help="the full suite: end-to-end workflow runs (marker slow) and, as root on Debian, the "
                          "workflow on a local SLURM cluster (marker slurm), which this installs and starts")


def pytest_collection_modifyitems(config, items):
    """Plain `pytest` is the fast suite: tests marked slow or slurm are skipped, saying how to run them."""
    if config.getoption("--full"):
        return
    skip = pytest.mark.skip(reason="an end-to-end run: the full suite is pytest --full")
    for item in items:
        if "slow" in item.keywords or "slurm" in item.keywords:
            item.add_marker(skip)
TINY = REPO / "tests" / "configs" / "tiny.yaml"

# The models and data the unit tests share: a small toy DDPM, and the 2-D Gaussian it learns.
TOY_DDPM = {"adapter": "toy-diffusion", "arch": {"hidden": 16, "layers": 2, "timesteps": 100}}
GAUSS2D_COV = [[2.0, 1.0], [1.0, 2.0]]


def gauss2d(reference_n: int, reference_seed: int) -> dict:
    """The 2-D Gaussian data set of the tests, its reference `reference_n` points drawn with `reference_seed`."""
    return {"kind": "gaussian2d", "mean": [0.0, 0.0], "cov": GAUSS2D_COV,
            "reference": {"n": reference_n, "seed": reference_seed}}


def assert_drawn_figure(path: Path, min_pixels: tuple[int, int] = (300, 400)) -> None:
    """A PNG figure of at least `min_pixels` (height, width) with something drawn on it: many
    distinct colours, not a blank or one-colour canvas."""
    import matplotlib.image

    assert path.read_bytes().startswith(b"\x89PNG"), path
    pixels = matplotlib.image.imread(path)
    assert pixels.shape[0] >= min_pixels[0] and pixels.shape[1] >= min_pixels[1], pixels.shape
    colours = {tuple(p) for p in (pixels[::4, ::4, :3] * 255).astype(int).reshape(-1, 3)}
    assert len(colours) > 20 and pixels[..., :3].std() > 0.02, (len(colours), pixels.std())


def tiny_config() -> dict:
    """The tiny workflow config (tests/configs/tiny.yaml), as a dict to edit."""
    return yaml.safe_load(TINY.read_text())
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def snakemake(workdir: Path, *args: str, config: Path = TINY, check: bool = True,
              extra_configs=()) -> subprocess.CompletedProcess:
    """Run the repository's workflow in `workdir` (results and .snakemake land there);
    `extra_configs` are merged over `config` (snakemake's --configfile A B ...)."""
    cmd = [*SNAKEMAKE, "-s", str(REPO / "Snakefile"), "-d", str(workdir), "--configfile", str(config),
           *map(str, extra_configs)]
    proc = subprocess.run(cmd + list(args), capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def planned_jobs(workdir: Path, config: Path = TINY) -> list[tuple[str, dict[str, str]]]:
    """The jobs a dry run would run: (rule, wildcards) for each."""
    proc = snakemake(workdir, "--dry-run", config=config)
    jobs = []
    for block in re.split(r"\n(?=\s*(?:local)?(?:rule|checkpoint) \S+:)", proc.stdout):
        match = re.match(r"\s*(?:local)?(?:rule|checkpoint) (\S+):", block)
        if not match:
            continue
        wildcards = re.search(r"^\s+wildcards: (.*)$", block, re.M)
        pairs = dict(item.split("=", 1) for item in wildcards.group(1).split(", ")) if wildcards else {}
        jobs.append((match.group(1), pairs))
    return jobs


def edited_config(tmp_path: Path, edit, source: Path = TINY) -> Path:
    """A copy of a config with `edit(config_dict)` applied."""
    config = yaml.safe_load(source.read_text())
    edit(config)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """The tiny config run end to end once per test session; its working directory."""
    workdir = tmp_path_factory.mktemp("tiny")
    snakemake(workdir, "--cores", "2")
    return workdir


@pytest.fixture
def tiny_copy(tiny_run, tmp_path) -> Path:
    """A private copy of the tiny run (results and snakemake's records), for tests that change it."""
    workdir = tmp_path / "run"
    shutil.copytree(tiny_run, workdir, symlinks=True)
    return workdir


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread, as the workflow's jobs use: on a 2-core machine shared with other work,
    two threads made these small nets' training steps 10-20 times slower."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


def respelt(value, key=None):
    """A config's settings as another YAML tool or user might write them: keys in reverse order,
    integers as floats (1.0e+3), learning rates as exponent strings (YAML 1.1 reads 1e-04 as a
    string), float means as integers, and the schema's and the adapters' defaults written out."""
    from neon_steps.models.knobs import DECLARED

    if isinstance(value, dict):
        spelt = {k: respelt(value[k], k) for k in sorted(value, reverse=True)}
        if {"evaluate", "synthetic"} <= spelt.keys():  # a model
            for key, default in (("shard_size", 1000), ("jobs", "per_point"), ("gamma", [1.0]), ("noise_seeds", [])):
                spelt["evaluate"].setdefault(key, default)
            spelt["synthetic"].setdefault("shard_size", 1000)
            arch_knobs, kappa_knobs = DECLARED[spelt["adapter"]]
            spelt["arch"] = {**arch_knobs.defaults(), **spelt.get("arch", {})}
            for section in ("synthetic", "evaluate"):
                spelt[section]["kappa"] = {**kappa_knobs.defaults(), **spelt[section]["kappa"]}
        return spelt
    if isinstance(value, list):
        return [respelt(item, key) for item in value]
    if key in {"n", "seed", "sizes", "batch_size", "n_real", "data_seed", "prc_n"} and type(value) is int:
        return float(value)
    if key == "lr":
        return f"{value:e}"
    if key == "mean":
        return int(value)
    return value
