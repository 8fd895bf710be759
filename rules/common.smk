# What every step shares: the config, checked once; each result's path; what a job's params hold;
# the weights of a model. Each step's input and params functions: inputs.smk (the search's:
# search_inputs.smk).
import json
import os
import re
import sys

from snakemake.utils import validate

# Every job imports this checkout's neon_steps, installed or not, in any environment (a conda
# env of envs/, a SLURM node): put it first on the path of this process and of every job.
sys.path.insert(0, workflow.basedir)
os.environ.update(PYTHONPATH=os.pathsep.join(filter(None, [workflow.basedir, os.environ.get("PYTHONPATH")])))
from neon_steps import config as neon_config, models as neon_models, user_files  # noqa: E402
from neon_steps import synthetic as neon_synthetic  # noqa: E402
from neon_steps.io import file_identity  # noqa: E402

SCHEMA = workflow.source_path("../schemas/config.schema.yaml")


# -- the config, checked --------------------------------------------------------------------------
def config_error(mistakes):
    return WorkflowError("\n".join(f"config: {mistake}" for mistake in mistakes))


# Every mistake that can be known before a job runs is reported here, so that a dry run shows it
# and no job fails on it after Snakemake has deleted the job's previous output.
try:
    neon_config.prepare(config, SCHEMA)  # every mistake, one line each naming its field
except neon_config.ConfigError as err:
    raise config_error(err.mistakes) from None
validate(config, SCHEMA)
if mistakes := user_files.mistakes(config):  # a user file of the wrong kind
    raise config_error(mistakes)


onstart:
    # A run (not a dry run, which plans without them) needs every user file the config names, and
    # an adapter for every model.
    if mistakes := user_files.missing(config) + neon_models.unwritten_adapters(config):
        raise config_error(mistakes)


MODELS = config["models"]
DATASETS = config["datasets"]
fmt = neon_config.fmt


wildcard_constraints:
    model="|".join(map(re.escape, MODELS)),
    dataset="|".join(map(re.escape, DATASETS)),
    S=r"[0-9]+",
    B=neon_config.NUMBER,
    w=neon_config.NUMBER,
    gamma=neon_config.NUMBER,
    seed=r"[0-9]+",
    k=r"[0-9]+",
    part=r"[0-9]+",


# -- paths ----------------------------------------------------------------------------------------
RESULTS = config.get("results", "results")


def out(path):
    return f"{RESULTS}/{path}"


# Each result's path pattern, written once: a rule's output is `path(name)`, and an input function
# names the same file as `path(name, **wildcards)` (numbers in their one spelling, fmt's).
PATHS = {
    "data": "data/{dataset}.safetensors",  # a data set stored once (digits)
    "classifier": "classifier/{dataset}.safetensors",  # the CNN whose features score it
    "reference": "reference/{dataset}.safetensors",  # its reference statistics
    "base": "{model}/base.safetensors",  # θ_r
    "synthetic": "{model}/S{S}/synthetic/manifest.json",  # S: its parts, listed
    "synthetic_part": "{model}/S{S}/synthetic/part{part}.safetensors",  # the rows one sample job draws
    "state": "{model}/S{S}/finetune/B{B}.state.safetensors",  # the fine-tune at budget B
    "ckpt": "{model}/S{S}/ckpt/B{B}.safetensors",  # θ_s: the weights of that state
    "merged": "{model}/S{S}/B{B}/w{w}.safetensors",  # θ at one w
    "point": "{model}/S{S}/B{B}/w{w}/g{gamma}.json",  # the metrics of one (w, γ)
    "preview": "{model}/S{S}/B{B}/w{w}/g{gamma}.preview.safetensors",  # its first 100 samples
    "features": "{model}/S{S}/B{B}/w{w}/g{gamma}.features.safetensors",  # its samples' features
    "final": "{model}/S{S}/B{B}/w{w}/g{gamma}.final.json",  # the final evaluation there
    # the features of one part job of a fanned-out evaluation (evaluate.images_per_job; temporary)
    "point_part": "{model}/S{S}/B{B}/w{w}/g{gamma}/part{part}.features.safetensors",
    "final_part": "{model}/S{S}/B{B}/w{w}/g{gamma}/final_part{part}.features.safetensors",
    "line": "{model}/S{S}/B{B}/g{gamma}.line.json",  # every w at one (S, B, γ)
    "noise": "{model}/noise/seed{seed}/g{gamma}.json",  # the base at another seed
    "noise_part": "{model}/noise/seed{seed}/g{gamma}/part{part}.features.safetensors",
    "round": "search/{model}/S{S}/B{B}/round{k}.json",  # a search round
}
NUMBERS = {"B", "w", "gamma"}  # wildcards spelt by fmt


def path(name, **wildcards):
    pattern = out(PATHS[name])
    if not wildcards:
        return pattern
    return pattern.format(**{key: fmt(value) if key in NUMBERS else value for key, value in wildcards.items()})


def point_file(model, S, B, w, g, kind="point"):
    """A file of one (w, γ) point: its metrics, or its "preview", "features" or "final"."""
    return path(kind, model=model, S=S, B=B, w=w, gamma=g)


def log(rule, of):
    """The log of a `rule` job that writes the result `of` (a name in PATHS), named as that result."""
    return out(f"logs/{rule}/{job_name(of)}.log")


def bench(rule, of):
    return out(f"benchmarks/{rule}/{job_name(of)}.tsv")


def job_name(of):
    return PATHS[of].split(".", 1)[0] if of in PATHS else of


# -- what a job's params hold ---------------------------------------------------------------------
# Settings that do not change what any one job computes stay out of `params`: grids name which
# jobs exist (adding a w must not rerun the other w's evaluations), save intervals only decide
# how much a killed job loses.
NOT_IN_PARAMS = {
    "synthetic": {"sizes"},
    "finetune": {"budgets", "save_every_images", "save_every_minutes", "loader_workers"},
    "evaluate": {"w", "gamma", "noise_seeds", "search", "images_per_job"},
}


def dataset_settings(dataset):
    """A data set's settings without its reference (feature space) settings, which belong to the
    classifier and reference rules alone."""
    return {k: v for k, v in DATASETS[dataset].items() if k != "reference"}


def model_spec(model, *sections, dataset=False):
    """The parts of a model's config one stage depends on, for its `params`: changing any other
    part does not rerun that stage."""
    spec = MODELS[model]
    return {
        "name": model,
        "adapter": spec["adapter"],
        "arch": spec.get("arch", {}),
        "guidance": spec.get("guidance", False),
        **({"dataset_spec": dataset_settings(spec["dataset"])} if dataset else {}),
        **{
            section: {k: v for k, v in spec[section].items() if k not in NOT_IN_PARAMS.get(section, ())}
            for section in sections
        },
    }


def resource(stage, key, default):
    """A model's `resources.<stage>.<key>` from the config, else the rule's default."""
    return lambda wc: MODELS[wc.model].get("resources", {}).get(stage, {}).get(key, default)


# User files (a checkpoint, Inception weights, reference statistics) are not inputs of the rules:
# a dry run must build without them; a run checks them all before its first job (onstart above).
# Their size and mtime go into `params`, so that a replaced file reruns what read it.
def user_file(path):
    try:
        return file_identity(path)
    except OSError:
        return {"path": path, "missing": True}


# -- the weights of a model -----------------------------------------------------------------------
def trained(model):
    """The model whose base and fine-tuned checkpoints `model` evaluates: itself, or the one its
    `training_of` names (an evaluation knob such as IMM's T shares one training)."""
    return MODELS[model].get("training_of", model)


def base_weights(model):
    """θ_r of `model`: its own, or that of the first model by name trained the same way (one base
    for models that differ in S, fine-tune or evaluation only)."""
    return path("base", model=neon_config.base_owner(model, MODELS))


def get_base_weights(wc):
    return base_weights(wc.model)


def get_selftrained_weights(wc):
    """θ_s of a point: the fine-tuned weights of the model whose training it evaluates."""
    return path("ckpt", model=trained(wc.model), S=wc.S, B=wc.B)
