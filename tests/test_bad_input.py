"""Bad input never reaches a job: after a complete run of the tiny config, each mistake a user can
make in the config, in a user file, in a file a stage reads or on neon-merge's command line ends
with a non-zero exit status, one line naming the field or file, no traceback, and every result file
as it was."""
import hashlib
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from conftest import TINY, planned_jobs, respelt, snakemake
from neon_steps import config as neon_config
from neon_steps.config import ConfigError

@pytest.fixture(scope="module")
def finished(tiny_run, tmp_path_factory) -> Path:
    """A complete run every case of this module tries its mistake on (each leaves it as it was)."""
    workdir = tmp_path_factory.mktemp("finished") / "run"
    shutil.copytree(tiny_run, workdir, symlinks=True)
    return workdir


def result_hashes(workdir: Path) -> dict[str, str]:
    """Every result file's hash (the jobs' logs aside)."""
    return {str(path.relative_to(workdir)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted((workdir / "results").rglob("*")) if path.is_file() and "logs" not in path.parts}


def tiny(edit=None) -> dict:
    config = yaml.safe_load(TINY.read_text())
    if edit:
        edit(config)
    return config


def write(path: Path, config) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False) if not isinstance(config, str) else config)
    return path


def refused(proc: subprocess.CompletedProcess, line: str) -> None:
    """The run failed with `line` as one of its output's lines, and no traceback."""
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output[-2000:]
    assert "Traceback" not in output, output[-4000:]
    assert line in output.splitlines(), f"{line!r} not among:\n{output[-3000:]}"


def html_page(path: Path) -> Path:
    path.write_bytes(b"<!DOCTYPE html><html><body>Sign in to continue</body></html>")
    return path


def torch_file(path: Path) -> Path:
    """A zip archive, as far as a dry run looks (the kind torch.save writes)."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", b"")
    return path


def model(config, name="ddpm") -> dict:
    return config["models"][name]


# -- the config -----------------------------------------------------------------------------------
# Each case is tried twice: on the config loader, in the fast suite, and on a finished run, where
# it must change nothing.
def listed_models(c):
    c["models"] = list(c["models"])


def extra_model(**spec):
    return lambda c: c["models"].update(extra={**model(c, "ar"), **spec})


CONFIG_CASES = {
    # unknown keys, in every section
    "finetune key": (lambda c: model(c)["finetune"].update(save_every_image=1000),
                     "models.ddpm.finetune.save_every_image: unknown setting (did you mean save_every_images?)"),
    "base key": (lambda c: model(c)["base"].update(held_out=10),
                 "models.ddpm.base.held_out: unknown setting (known: lr, batch_size, seed, warmup_images, betas, "
                 "weight_decay, images, n_real, data_seed)"),
    "data set key": (lambda c: c["datasets"]["gauss2d"].update(heldout=10),
                     "datasets.gauss2d.heldout: not a setting of a gaussian2d data set (its settings: cov, kind, "
                     "mean, reference)"),
    "data set misspelt key": (lambda c: c["datasets"]["gauss2d"].update(referense={}),
                              "datasets.gauss2d.referense: unknown setting (did you mean reference?)"),
    "kappa key": (lambda c: model(c)["synthetic"]["kappa"].update(zetta=1.1),
                  "models.ddpm.synthetic.kappa.zetta: unknown setting (did you mean zeta?)"),
    "arch key": (lambda c: model(c)["arch"].update(hiden=16),
                 "models.ddpm.arch.hiden: unknown setting (did you mean hidden?)"),
    "model key": (lambda c: model(c).update(evalute={}),
                  "models.ddpm.evalute: unknown setting (did you mean evaluate?)"),
    "top-level key": (lambda c: c.update(result="elsewhere"), "result: unknown setting (did you mean results?)"),
    # types: an integer written as a float passes as that integer; these are not numbers at all
    "kappa type": (lambda c: model(c)["evaluate"]["kappa"].update(steps="ten"),
                   "models.ddpm.evaluate.kappa.steps: must be an integer (got 'ten')"),
    "kappa fraction for an integer": (lambda c: model(c)["evaluate"]["kappa"].update(steps=10.5),
                                      "models.ddpm.evaluate.kappa.steps: must be an integer (got 10.5)"),
    "lr type": (lambda c: model(c)["finetune"].update(lr="fast"),
                "models.ddpm.finetune.lr: 'fast' is not of type 'number'"),
    "kappa choice": (lambda c: model(c)["evaluate"]["kappa"].update(sampler="ddpm"),
                     "models.ddpm.evaluate.kappa.sampler: 'ddpm' is not one of ddim, ddim-stretched-time"),
    "models as a list": (listed_models, "models: must be a mapping of model names to their settings (got a list)"),
    "empty model": (lambda c: c["models"].update(extra=None),
                    "models.extra: must be a mapping of settings (adapter, dataset, base, synthetic, finetune, "
                    "evaluate), got nothing"),
    # ranges
    "kappa steps 0": (lambda c: model(c)["evaluate"]["kappa"].update(steps=0),
                      "models.ddpm.evaluate.kappa.steps: 0 must be at least 1"),
    "kappa across arch": (lambda c: model(c)["synthetic"]["kappa"].update(steps=500),
                          "models.ddpm.synthetic.kappa.steps: 500 sampling steps is more than the model's "
                          "arch.timesteps (100)"),
    "arch rule": (lambda c: model(c, "ar")["arch"].update(low=3.0, high=-3.0),
                  "models.ar.arch.high: -3 must be above low (3)"),
    "arch range": (lambda c: model(c, "ar")["arch"].update(bins=1), "models.ar.arch.bins: 1 must be at least 2"),
    "temperature 0": (lambda c: model(c, "ar")["synthetic"]["kappa"].update(tau=0),
                      "models.ar.synthetic.kappa.tau: 0 must be above 0"),
    "negative lr": (lambda c: model(c)["finetune"].update(lr=-1e-4),
                    "models.ddpm.finetune.lr: -0.0001 is less than or equal to the minimum of 0"),
    "batch size 0": (lambda c: model(c)["finetune"].update(batch_size=0),
                     "models.ddpm.finetune.batch_size: 0 is less than the minimum of 1"),
    "w start above stop": (lambda c: model(c)["evaluate"].update(w={"start": 2, "stop": -2, "step": 0.5}),
                           "models.ddpm.evaluate.w: start (2) is above stop (-2)"),
    "w step 0": (lambda c: model(c)["evaluate"].update(w={"start": -1, "stop": 1, "step": 0}),
                 "models.ddpm.evaluate.w.step: 0.0 is less than or equal to the minimum of 0"),
    # no duplicates in any grid
    "repeated size": (lambda c: model(c)["synthetic"].update(sizes=[500, 500]),
                      "models.ddpm.synthetic.sizes: 500 is given twice"),
    "repeated budget": (lambda c: model(c)["finetune"].update(budgets=[0.005, 0.01, 0.01]),
                        "models.ddpm.finetune.budgets: 0.01 is given twice"),
    "repeated w": (lambda c: model(c)["evaluate"].update(w=[0.5, -0.5, 0.5]),
                   "models.ddpm.evaluate.w: 0.5 is given twice"),
    "repeated noise seed": (lambda c: model(c)["evaluate"].update(noise_seeds=[4, 4]),
                            "models.ddpm.evaluate.noise_seeds: 4 is given twice"),
    "noise seed is the seed": (lambda c: model(c)["evaluate"].update(noise_seeds=[3]),
                               "models.ddpm.evaluate.noise_seeds: 3 is evaluate.seed already; the spread between "
                               "draws needs other seeds"),
    # adapters that cannot be imported
    "misspelt adapter": (lambda c: model(c).update(adapter="toy-difusion"),
                         "models.ddpm.adapter: 'toy-difusion' is neither a built-in adapter (did you mean "
                         "toy-diffusion?) nor package.module:Class"),
    "adapter module missing": (lambda c: model(c).update(adapter="no_such_package.models:Net"),
                               "models.ddpm.adapter: cannot import no_such_package.models:Net (No module named "
                               "'no_such_package')"),
    "adapter not an adapter": (lambda c: model(c).update(adapter="collections:OrderedDict"),
                               "models.ddpm.adapter: collections:OrderedDict is not a neon_steps.models.Adapter "
                               "subclass"),
    # cross-field rules
    "unknown data set": (lambda c: model(c).update(dataset="gauss3d"),
                         "models.ddpm.dataset: no dataset named 'gauss3d' in datasets (have: gauss2d)"),
    "extends nothing": (lambda c: model(c).update(extends="ddpn"), "models.ddpm.extends: no model named 'ddpn'"),
    "gamma without guidance": (lambda c: model(c)["evaluate"].update(gamma=[1.0, 2.0]),
                               "models.ddpm.evaluate.gamma: the model has no guidance (guidance: false), so gamma "
                               "must be [1]"),
    "guidance without cfg": (lambda c: model(c).update(guidance=True),
                             "models.ddpm.guidance: adapter toy-diffusion has no classifier-free guidance (no cfg "
                             "knob)"),
    "final_n below n": (lambda c: model(c)["evaluate"].update(search={"mode": "brent", "final_n": 500}),
                        "models.ddpm.evaluate.search.final_n: must be larger than evaluate.n (1000)"),
    "gaussian cov": (lambda c: c["datasets"]["gauss2d"].update(cov=[[2.0, 1.0]]),
                     "datasets.gauss2d.cov: must be 2 x 2, as mean has 2 entries"),
    "training_of nothing": (extra_model(training_of="arr"), "models.extra.training_of: no model named 'arr'"),
}


@pytest.mark.parametrize("edit, line", CONFIG_CASES.values(), ids=CONFIG_CASES)
def test_the_config_loader_names_the_mistake(edit, line):
    with pytest.raises(ConfigError) as refused_config:
        neon_config.prepare(tiny(edit))
    assert refused_config.value.mistakes == [line]


@pytest.mark.slow  # a workflow run
@pytest.mark.parametrize("edit, line", CONFIG_CASES.values(), ids=CONFIG_CASES)
def test_a_config_mistake_is_one_line_and_changes_nothing(finished, tmp_path, edit, line):
    before = result_hashes(finished)
    proc = snakemake(finished, "--cores", "1", config=write(tmp_path / "config.yaml", tiny(edit)), check=False)
    refused(proc, f"config: {line}")
    assert result_hashes(finished) == before


@pytest.mark.slow  # a workflow run
def test_several_mistakes_are_listed_together(finished, tmp_path):
    def edit(c):
        model(c)["finetune"].update(save_every_image=1000)
        model(c)["synthetic"]["kappa"].update(zetta=1.1)
        model(c, "ar")["evaluate"]["kappa"].update(tau=-1)
        model(c, "ar").update(adapter="toy-autoregresive")
    proc = snakemake(finished, "--dry-run", config=write(tmp_path / "config.yaml", tiny(edit)), check=False)
    errors = [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("config: ")]
    assert errors == [
        "config: models.ddpm.finetune.save_every_image: unknown setting (did you mean save_every_images?)",
        "config: models.ar.adapter: 'toy-autoregresive' is neither a built-in adapter (did you mean "
        "toy-autoregressive?) nor package.module:Class",
        "config: models.ddpm.synthetic.kappa.zetta: unknown setting (did you mean zeta?)",
    ]
    assert proc.returncode != 0 and "Traceback" not in proc.stderr


@pytest.mark.slow  # a workflow run
def test_a_mistake_inherited_through_extends_is_named_once(finished, tmp_path):
    config = tiny(lambda c: c["models"].update(ddpm2={"extends": "ddpm"}))
    model(config)["arch"]["hiden"] = 16
    proc = snakemake(finished, "--dry-run", config=write(tmp_path / "config.yaml", config), check=False)
    assert [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("config: ")] == [
        "config: models.ddpm.arch.hiden: unknown setting (did you mean hidden?)"]


@pytest.mark.slow  # a workflow run
@pytest.mark.parametrize("text, line", [
    ("models:\n  ddpm: {adapter: x\n datasets: 1\n",
     "Config file is not valid JSON or YAML. In case of YAML, make sure to not mix whitespace and tab indentation."),
    ("", "Config file must be given as JSON or YAML with keys at top level."),
], ids=["broken YAML", "empty file"])
def test_a_config_file_that_is_not_a_config_is_one_line(finished, tmp_path, text, line):
    before = result_hashes(finished)
    refused(snakemake(finished, "--cores", "1", config=write(tmp_path / "config.yaml", text), check=False), line)
    assert result_hashes(finished) == before


# -- user files -----------------------------------------------------------------------------------
def with_checkpoint(tmp_path, adapter="torchcfm", **base):
    """The tiny config with a model converted from a user checkpoint (the run never gets that far)."""
    config = tiny()
    config["models"]["real"] = {**model(config, "ar"), "adapter": adapter, "arch": {},
                                "base": {"images": 1.0, **base}}
    config["models"]["real"]["synthetic"] = {**model(config, "ar")["synthetic"], "kappa": {}}
    config["models"]["real"]["evaluate"] = {**model(config, "ar")["evaluate"], "kappa": {}}
    return config


def with_inception(tmp_path, **files):
    config = tiny()
    config["datasets"]["images"] = {"kind": "inception", **files}
    return config


def user_file_cases(tmp_path):
    html = html_page(tmp_path / "model.pt")
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    notes = tmp_path / "stats.npz"
    notes.write_text("mu and sigma to follow\n")
    ckpt = torch_file(tmp_path / "ckpt.pt")
    pickle = tmp_path / "network.pkl"
    pickle.write_bytes(b"\x80\x04K\x01.")
    weights = torch_file(tmp_path / "inception.pth")
    stats = torch_file(tmp_path / "stats_ok.npz")
    return {
        "checkpoint an HTML page": (
            with_checkpoint(tmp_path, checkpoint=str(html)),
            f"config: models.real.base.checkpoint: {html}: not a file the workflow reads: neither a zip archive "
            f"(torch.save, .npz), a pickle nor a safetensors file; it begins b'<!DOCTYPE html><html><bo' (an HTML "
            f"page: a download that saved an error or sign-in page?)"),
        "checkpoint empty": (
            with_checkpoint(tmp_path, checkpoint=str(empty)),
            f"config: models.real.base.checkpoint: {empty}: not a file the workflow reads: the file is empty"),
        "diffusers checkpoint not a folder": (
            with_checkpoint(tmp_path, "diffusers", checkpoint=str(ckpt)),
            f"config: models.real.base.checkpoint: {ckpt}: is a zip archive; the diffusers adapter reads a folder"),
        "EDM pickle without allow_pickle": (
            with_checkpoint(tmp_path, "edm", checkpoint=str(pickle), source=str(tmp_path)),
            f"config: models.real.base.allow_pickle: {pickle} is a pickle, which runs code to load; set "
            f"allow_pickle: true for a file you trust"),
        "EDM without source": (
            with_checkpoint(tmp_path, "edm", checkpoint=str(pickle), allow_pickle=True),
            "config: models.real.base.source: EDM's pickles need EDM's source tree to load; name a checkout of "
            "NVlabs/edm"),
        "source not a folder": (
            with_checkpoint(tmp_path, "edm", checkpoint=str(pickle), allow_pickle=True, source=str(ckpt)),
            f"config: models.real.base.source: {ckpt}: not a folder (a checkout of the model's codebase)"),
        "statistics a text file": (
            with_inception(tmp_path, inception_weights=str(weights), statistics=str(notes)),
            f"config: datasets.images.statistics: {notes}: not a file the workflow reads: neither a zip archive "
            f"(torch.save, .npz), a pickle nor a safetensors file; it begins b'mu and sigma to follow\\n'"),
        "Inception weights an HTML page": (
            with_inception(tmp_path, inception_weights=str(html), statistics=str(stats)),
            f"config: datasets.images.inception_weights: {html}: not a file the workflow reads: neither a zip "
            f"archive (torch.save, .npz), a pickle nor a safetensors file; it begins b'<!DOCTYPE html><html><bo' "
            f"(an HTML page: a download that saved an error or sign-in page?)"),
    }


USER_FILE_CASES = ["checkpoint an HTML page", "checkpoint empty", "diffusers checkpoint not a folder",
                   "EDM pickle without allow_pickle", "EDM without source", "source not a folder",
                   "statistics a text file", "Inception weights an HTML page"]


@pytest.mark.slow  # a workflow run
@pytest.mark.parametrize("case", USER_FILE_CASES)
def test_a_wrong_user_file_is_named_at_dry_run(finished, tmp_path, case):
    config, line = user_file_cases(tmp_path)[case]
    before = result_hashes(finished)
    refused(snakemake(finished, "--dry-run", config=write(tmp_path / "config.yaml", config), check=False), line)
    refused(snakemake(finished, "--cores", "1", config=write(tmp_path / "config.yaml", config), check=False), line)
    assert result_hashes(finished) == before


@pytest.mark.slow  # a workflow run
def test_a_missing_user_file_plans_but_does_not_run(finished, tmp_path):
    missing = tmp_path / "not-downloaded-yet.pt"
    config = write(tmp_path / "config.yaml", with_checkpoint(tmp_path, checkpoint=str(missing)))
    before = result_hashes(finished)
    snakemake(finished, "--dry-run", config=config)  # planning needs no files
    refused(snakemake(finished, "--cores", "1", config=config, check=False),
            f"config: models.real.base.checkpoint: {missing}: no such file or folder (a dry run plans without it; "
            f"a run needs it)")
    assert result_hashes(finished) == before


@pytest.mark.slow  # a workflow run
def test_a_conversion_that_fails_in_its_job_keeps_the_previous_base(tmp_path):
    """What only the adapter can find (the key a checkpoint keeps θ_r at) fails the base job; the
    base it converted before is restored, and nothing after it has run."""
    import torch

    from neon_steps.models import load_adapter

    config = tiny()
    del config["models"]["ar"]
    net = load_adapter(model(config)).state_dict()
    checkpoint = tmp_path / "user.pt"
    torch.save({"ema": net}, checkpoint)
    model(config)["base"] = {"checkpoint": str(checkpoint), "key": "ema", "images": 1.0}
    path, workdir = write(tmp_path / "config.yaml", config), tmp_path / "run"
    snakemake(workdir, "--cores", "2", config=path)
    before = result_hashes(workdir)
    torch.save({"model": net}, checkpoint)  # another layout, still a torch.save file
    proc = snakemake(workdir, "--cores", "1", config=path, check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stdout + proc.stderr
    assert "Restored previous version of results/ddpm/base.safetensors (updating job failed)." in proc.stderr
    log = (workdir / "results/logs/prepare_base/ddpm/base.log").read_text().strip().splitlines()
    assert log[-1].startswith("error: ") and "ema" in log[-1] and "Traceback" not in "\n".join(log)
    assert result_hashes(workdir) == before


# -- neon-merge's command line --------------------------------------------------------------------
def neon_merge(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(Path(sys.executable).with_name("neon-merge")), *args], capture_output=True, text=True,
                          cwd=cwd)


def cli_cases(finished: Path, tmp_path: Path) -> dict:
    """Each case: (a command to run, the one line it must end with)."""
    base = str(finished / "results/ddpm/base.safetensors")
    html = str(html_page(tmp_path / "page.pt"))
    notes = tmp_path / "notes.pkl"
    notes.write_text("these are my notes\n")
    out = str(tmp_path / "out.safetensors")
    return {
        "merge: an HTML page": (
            lambda: neon_merge(base, html, "--w", "1", "--out", out, cwd=tmp_path),
            f"neon-merge: error: {html}: not a checkpoint: neither a zip archive (torch.save, .npz), a pickle nor a "
            f"safetensors file; it begins b'<!DOCTYPE html><html><bo' (an HTML page: a download that saved an error "
            f"or sign-in page?)"),
        "merge: a text file": (
            lambda: neon_merge(str(notes), base, "--w", "1", "--out", out, cwd=tmp_path),
            f"neon-merge: error: {notes}: not a checkpoint: neither a zip archive (torch.save, .npz), a pickle nor a "
            f"safetensors file; it begins b'these are my notes\\n'"),
        "merge: a missing file": (
            lambda: neon_merge(base, str(tmp_path / "absent.safetensors"), "--w", "1", "--out", out, cwd=tmp_path),
            f"neon-merge: error: {tmp_path / 'absent.safetensors'}: no such file"),
    }


CLI_CASES = ["merge: an HTML page", "merge: a text file", "merge: a missing file"]


@pytest.mark.slow  # a workflow run
@pytest.mark.parametrize("case", CLI_CASES)
def test_a_command_line_mistake_is_one_line(finished, tmp_path, case):
    before = result_hashes(finished)
    run, line = cli_cases(finished, tmp_path)[case]
    proc = run()
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1] == line
    assert proc.stderr.count("error:") == 1 and "allow-pickle" not in proc.stderr
    assert result_hashes(finished) == before


# -- one stage run on its own: snakemake <its output> ---------------------------------------------
@pytest.mark.slow  # a workflow run
def test_a_missing_config_file_is_named(finished, tmp_path):
    """Snakemake reads --configfile before the workflow loads, so the message is snakemake's own:
    a traceback (not the workflow's to change) whose last line names the file."""
    absent = tmp_path / "absent.yaml"
    before = result_hashes(finished)
    proc = snakemake(finished, "--cores", "1", "results/ddpm/S500/synthetic/manifest.json", config=absent, check=False)
    assert proc.returncode != 0
    assert (proc.stdout + proc.stderr).strip().splitlines()[-1] == (
        f"FileNotFoundError: [Errno 2] No such file or directory: '{absent}'")
    assert result_hashes(finished) == before


@pytest.mark.slow  # a workflow run
def test_an_output_of_an_unknown_model_is_one_line(finished):
    before = result_hashes(finished)
    proc = snakemake(finished, "--cores", "1", "results/ddpn/S500/synthetic/manifest.json", check=False)
    refused(proc, "No rule to produce results/ddpn/S500/synthetic/manifest.json (if you use input functions make sure "
                  "that they don't raise unexpected exceptions).")
    assert result_hashes(finished) == before


@pytest.mark.slow  # a workflow run
def test_a_results_folder_that_cannot_be_made_is_one_line(finished, tmp_path):
    config = write(tmp_path / "config.yaml", tiny(lambda c: c.update(results="/proc/no-such-folder")))
    before = result_hashes(finished)
    proc = snakemake(finished, "--cores", "1", "/proc/no-such-folder/ddpm/base.safetensors", config=config, check=False)
    refused(proc, "Failed to create output directory /proc/no-such-folder/ddpm.")
    assert result_hashes(finished) == before


def not_json(path: Path) -> Path:
    path.write_text("{'fid': 1.0")
    return path


NOT_A_SAFETENSORS_FILE = ("neither a zip archive (torch.save, .npz), a pickle nor a safetensors file; it begins "
                          "b'<!DOCTYPE html><html><bo' (an HTML page: a download that saved an error or sign-in page?)")
# Each case: (an intermediate file of the finished run, what replaces it, the output whose job reads
# it, the one line that job must fail with). A replaced file is newer than what was made from it,
# so `snakemake <output>` runs that job again on it.
CORRUPT_CASES = {
    "a base that is an HTML page": (
        "results/ddpm/base.safetensors", html_page, "results/ddpm/S500/synthetic/part0.safetensors",
        f"error: results/ddpm/base.safetensors: {NOT_A_SAFETENSORS_FILE}"),
    "a part of S that is an HTML page": (
        "results/ddpm/S500/synthetic/part0.safetensors", html_page, "results/ddpm/S500/synthetic/manifest.json",
        f"error: results/ddpm/S500/synthetic/part0.safetensors: {NOT_A_SAFETENSORS_FILE}"),
    "a manifest of S that is not JSON": (
        "results/ddpm/S500/synthetic/manifest.json", not_json, "results/ddpm/S500/finetune/B0.005.state.safetensors",
        "error: results/ddpm/S500/synthetic/manifest.json: not a JSON file (Expecting property name enclosed in "
        "double quotes: line 1 column 2 (char 1))"),
    "a fine-tune state that is an HTML page": (
        "results/ddpm/S500/finetune/B0.005.state.safetensors", html_page, "results/ddpm/S500/ckpt/B0.005.safetensors",
        f"error: results/ddpm/S500/finetune/B0.005.state.safetensors: {NOT_A_SAFETENSORS_FILE}"),
    "a point's metrics not JSON": (
        "results/ddpm/S500/B0.005/w0.5/g1.json", not_json, "results/tables/sweep.csv",
        "error: results/ddpm/S500/B0.005/w0.5/g1.json: not a JSON file (Expecting property name enclosed in double "
        "quotes: line 1 column 2 (char 1))"),
}


def failed_job(proc: subprocess.CompletedProcess) -> tuple[list[str], str]:
    """The outputs and the log of the one job snakemake reports failed."""
    blocks = proc.stderr.split("\nError in rule ")[1:]
    assert len(blocks) == 1, proc.stderr[-4000:]
    outputs = re.search(r"^\s+output: (.*)$", blocks[0], re.M).group(1).split(", ")
    log = re.search(r"^\s+log: (\S+) \(check log file\(s\) for error details\)$", blocks[0], re.M).group(1)
    return outputs, log


@pytest.mark.slow  # a workflow run
@pytest.mark.parametrize("case", CORRUPT_CASES)
def test_a_corrupt_intermediate_file_is_one_line(finished, tmp_path, case):
    """An intermediate file replaced by something else (an interrupted copy, a download of an error
    page): the job that reads it names it in one line, and nothing else of the run changes."""
    name, replace, target, line = CORRUPT_CASES[case]
    workdir = tmp_path / "run"
    shutil.copytree(finished, workdir, symlinks=True)  # a private copy: this case changes it
    replace(workdir / name)
    before = result_hashes(workdir)
    proc = snakemake(workdir, "--cores", "1", target, check=False)
    refused(proc, line)  # on the terminal
    outputs, log = failed_job(proc)
    assert target in outputs
    log_lines = (workdir / log).read_text().strip().splitlines()
    assert "Traceback" not in "\n".join(log_lines), log_lines[-40:]
    assert [entry for entry in log_lines if entry.startswith("error:")] == [line] == log_lines[-1:]
    after = result_hashes(workdir)
    assert {f: h for f, h in after.items() if f not in outputs} == {f: h for f, h in before.items() if f not in outputs}
    assert all(after.get(f) in (None, before.get(f)) for f in outputs)  # none remade from the replaced file


# -- reruns after a complete run ------------------------------------------------------------------
@pytest.mark.slow  # a workflow run
def test_defaults_written_out_and_keys_sorted_rerun_nothing(finished, tmp_path):
    config = write(tmp_path / "config.yaml", respelt(tiny()))
    text = config.read_text()
    assert "eta: 0.0" in text and "dim: 2" in text and "n: 1000.0" in text  # the adapters' defaults too
    assert planned_jobs(finished, config) == []


@pytest.mark.slow  # a workflow run
def test_the_run_is_untouched_by_every_mistake_above(finished):
    """Last in this module: after every refused run, the original config still has nothing to do."""
    assert planned_jobs(finished) == []
