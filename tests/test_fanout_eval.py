"""Evaluations fanned out over part jobs (evaluate.images_per_job): the parts' features, scored by
one light job, give exactly the FID, precision, recall, preview and features of one job, for a
point, a noise seed and a final evaluation; in the workflow too."""
import json
import re
import shutil

import pytest
import torch
import yaml

from conftest import REPO, edited_config, planned_jobs, snakemake
from neon_steps import config as neon_config, data, fid, synthetic
from neon_steps.config import ConfigError
from neon_steps.errors import NeonError
from neon_steps.io import load_metadata, load_tensors, save_tensors
from neon_steps.metrics import digits, reference
from neon_steps.models import load_adapter
from neon_steps.sampling import balanced_labels

# A class-conditional, guided model (labels and the preview matter), scored in the features of an
# untrained digits CNN: as good as a trained one for equalities, and no training.
DIGITS = {"kind": "digits", "heldout": 297, "split_seed": 0, "reference": {"classifier": {"width": 4, "channels": 4}}}
ARCH = {"channels": [8, 16], "layers_per_block": 1, "norm_groups": 4, "timesteps": 50}


def model(**evaluate):
    return {"name": "ddim", "adapter": "digits-diffusion", "guidance": True, "arch": ARCH, "dataset": "digits",
            "dataset_spec": DIGITS,
            "evaluate": {"n": 300, "prc_n": 200, "seed": 3, "shard_size": 50, "kappa": {"sampler": "ddim", "steps": 2},
                         **evaluate}}


@pytest.fixture(scope="module")
def files(tmp_path_factory, one_thread):
    folder = tmp_path_factory.mktemp("fanout")
    save_tensors(folder / "data.safetensors", data.digits(DIGITS))
    torch.manual_seed(0)
    digits.save(digits.build(DIGITS["reference"]["classifier"]), folder / "cnn.safetensors",
                DIGITS["reference"]["classifier"])
    save_tensors(folder / "ref.safetensors", reference(DIGITS, folder / "data.safetensors", folder / "cnn.safetensors"))
    load_adapter(model()).save(folder / "w.safetensors")
    return folder, str(folder / "w.safetensors"), str(folder / "ref.safetensors"), str(folder / "cnn.safetensors")


POINT = {"S": 500, "B": 0.01, "w": 0.5, "gamma": 1.5}


def scores(path):
    record = json.loads(path.read_text())
    record.pop("seconds")
    return record


def tensors(path):
    return load_tensors(path), load_metadata(path)


def draw_parts(folder, weights, cnn, per_job, count, first=0, n_final=None, preview=True, spec=None):
    """The part jobs of `count` samples from row `first`, `per_job` a job: their files."""
    settings = {"images_per_job": per_job}
    parts = []
    for part in range(synthetic.part_count(settings, count)):
        rows = synthetic.part_range(settings, count, part)
        parts.append(str(folder / f"part{first}-{part}.features.safetensors"))
        fid.evaluate_part(spec or model(), weights, POINT, [first + rows.start, first + rows.stop], parts[-1], cnn,
                          n_final=n_final, preview=preview)
    return parts


@pytest.mark.parametrize("per_job", [50, 100, 200])  # the preview (100 samples) in 2, 1 and 1 parts
def test_an_evaluation_scored_from_its_parts_is_the_one_job_evaluation(files, per_job):
    folder, weights, ref, cnn = files
    one = {k: folder / f"one.{k}" for k in ("json", "preview", "features")}
    fid.evaluate(model(), weights, ref, POINT, str(one["json"]), cnn, str(one["preview"]), str(one["features"]))
    parts = draw_parts(folder, weights, cnn, per_job, 300)
    fanned = {k: folder / f"fanned{per_job}.{k}" for k in ("json", "preview", "features")}
    fid.evaluate(model(), None, ref, POINT, str(fanned["json"]), preview=str(fanned["preview"]),
                 features=str(fanned["features"]), parts=parts)
    assert scores(fanned["json"]) == scores(one["json"])  # fid, precision, recall: the same floats
    assert scores(one["json"])["n"] == 300 and scores(one["json"])["precision"] is not None
    for kind in ("preview", "features"):
        (a, meta_a), (b, meta_b) = tensors(one[kind]), tensors(fanned[kind])
        assert a.keys() == b.keys() and meta_a == meta_b
        assert all(torch.equal(a[k], b[k]) for k in a), kind
    preview, _ = tensors(one["preview"])
    assert len(preview["samples"]) == 100  # and their labels: the first of the draw's balanced list
    assert torch.equal(preview["labels"], balanced_labels(300, 10, 3)[:100])


def test_a_final_evaluation_scored_from_its_parts_is_the_one_job_final(files):
    folder, weights, ref, cnn = files
    fid.evaluate(model(), weights, ref, POINT, str(folder / "search.json"), cnn,
                 features=str(folder / "search.features"))
    fid.evaluate_final(model(), weights, ref, POINT, 500, str(folder / "search.features"), str(folder / "final.json"),
                       cnn)
    parts = draw_parts(folder, weights, cnn, 100, 200, first=300, n_final=500, preview=False)
    assert "samples" not in load_tensors(parts[0])
    fid.evaluate_final(model(), None, ref, POINT, 500, str(folder / "search.features"),
                       str(folder / "final_fanned.json"), parts=parts)
    one, fanned = scores(folder / "final.json"), scores(folder / "final_fanned.json")
    assert fanned == one and (one["n"], one["n_reused"], one["n_sampled"]) == (500, 300, 200)


def test_a_noise_seed_fans_out_as_a_point_does(files):
    folder, weights, ref, cnn = files
    other = model(seed=4)
    fid.evaluate(other, weights, ref, {"w": 0.0, "gamma": 1.5}, str(folder / "noise.json"), cnn)
    parts = draw_parts(folder, weights, cnn, 150, 300, preview=False, spec=other)
    fid.evaluate(other, None, ref, {"w": 0.0, "gamma": 1.5}, str(folder / "noise_fanned.json"), parts=parts)
    assert scores(folder / "noise_fanned.json") == scores(folder / "noise.json")
    assert scores(folder / "noise.json")["seed"] == 4


def test_parts_of_another_draw_or_with_rows_missing_are_refused(files):
    folder, weights, ref, cnn = files
    parts = draw_parts(folder, weights, cnn, 150, 300, preview=False)
    with pytest.raises(NeonError, match=r"not rows 0\.\. of this evaluation's draw"):
        fid.evaluate(model(seed=5), None, ref, POINT, str(folder / "x.json"), parts=parts)
    with pytest.raises(NeonError, match=r"not rows 150\.\."):
        fid.evaluate(model(), None, ref, POINT, str(folder / "x.json"), parts=[parts[0], parts[0]])
    with pytest.raises(NeonError, match=r"1 parts hold 150 samples, not evaluate\.n \(300\)"):
        fid.evaluate(model(), None, ref, POINT, str(folder / "x.json"), parts=parts[:1])
    with pytest.raises(NeonError, match="starts at a shard"):
        fid.evaluate_part(model(), weights, POINT, [25, 75], str(folder / "x.features"), cnn)


def test_a_line_job_cannot_fan_out():
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    models = neon_config.resolve_models(config["models"])
    models["toy-ar-tau0.5"]["evaluate"]["images_per_job"] = 5000  # n: 20,000, jobs: per_line
    with pytest.raises(ConfigError, match=r"models\.toy-ar-tau0\.5\.evaluate\.images_per_job: jobs: per_line .* "
                                          r"20000 samples out over part jobs of 5000"):
        neon_config.check_models(models, config["datasets"])
    models["toy-ar-tau0.5"]["evaluate"]["images_per_job"] = 20000  # one job: allowed
    neon_config.check_models(models, config["datasets"])


# -- in the workflow ------------------------------------------------------------------------------
FINAL_N = 2000


def fanned(per_job):
    """The tiny config's DDPM alone (one B) with a final evaluation at 2,000 and a noise seed, its
    evaluations in shards of 250, `per_job` a part job (None: one job each)."""
    def edit(config):
        config["models"] = {"ddpm": config["models"]["ddpm"]}
        spec = config["models"]["ddpm"]
        spec["finetune"]["budgets"] = [0.005]
        spec["evaluate"].update(shard_size=250, noise_seeds=[4], search={"mode": "grid", "final_n": FINAL_N})
        if per_job:
            spec["evaluate"]["images_per_job"] = per_job
    return edit


def counts(jobs):
    found = {}
    for rule, _ in jobs:
        found[rule] = found.get(rule, 0) + 1
    return found


def results(workdir):
    """Every evaluation's metrics (seconds aside), preview and features, by path."""
    root = workdir / "results"
    found = {}
    for path in [*root.glob("ddpm/S*/B*/w*/g*.json"), *root.glob("ddpm/noise/seed*/g*.json")]:
        found[str(path.relative_to(root))] = scores(path)
    for path in root.glob("ddpm/S*/B*/w*/g*.safetensors"):
        loaded, meta = tensors(path)
        found[str(path.relative_to(root))] = ({k: v.tolist() for k, v in loaded.items()}, meta)
    return found


@pytest.mark.slow
def test_a_fanned_out_workflow_scores_what_one_job_a_point_scores(tmp_path):
    """A point drawn by two part jobs, the noise seed by two, the final's added 1,000 samples by
    two: the same metrics files, previews and features as one job each, and then, with
    images_per_job left out, the evaluations rerun as one job each (nothing else)."""
    workdir = tmp_path / "fanned"
    config = edited_config(tmp_path, fanned(500))
    jobs = counts(planned_jobs(workdir, config))  # before round 0: the base's point and noise seed
    assert (jobs["evaluate_point"], jobs["evaluate_point_part"]) == (1, 2)
    assert (jobs["evaluate_noise_seed"], jobs["evaluate_noise_seed_part"]) == (1, 2)
    final = "results/ddpm/S500/B0.005/w0.5/g1.final.json"  # a final at a point of the grid
    out = snakemake(workdir, "--dry-run", final, "--quiet", "rules", config=config).stdout
    assert re.search(r"^evaluate_final_part\s+2$", out, re.M) and re.search(r"^evaluate_point_part\s+2$", out, re.M)
    snakemake(workdir, "--cores", "2", config=config)
    assert not list((workdir / "results").rglob("*part*.features.safetensors"))  # temporary: gone once scored
    record = json.loads(next((workdir / "results/ddpm").glob("S*/B*/w*/g1.final.json")).read_text())
    assert (record["n"], record["n_reused"], record["n_sampled"]) == (FINAL_N, 1000, 1000)
    fanned_out = results(workdir)

    shutil.copytree(workdir, tmp_path / "one", symlinks=True)
    one_config = edited_config(tmp_path / "one", fanned(None))
    jobs = counts(planned_jobs(tmp_path / "one", one_config))
    assert not {"prepare_base", "sample_synthetic", "finetune_segment"} & jobs.keys()
    assert (jobs["evaluate_point"], jobs["evaluate_noise_seed"]) == (1, 1)  # then round 0 asks for the rest
    assert not {"evaluate_point_part", "evaluate_noise_seed_part"} & jobs.keys()
    snakemake(tmp_path / "one", "--cores", "2", config=one_config)
    one_job = results(tmp_path / "one")
    assert len(one_job) == 3 * 3 + 1 + 1 and one_job.keys() == fanned_out.keys()
    for name, value in one_job.items():
        assert fanned_out[name] == value, name
