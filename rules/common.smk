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
from neon_steps.io import file_identity  # noqa: E402

SCHEMA = workflow.source_path("../schemas/config.schema.yaml")


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


# -- paths ------------------------------------------------------------------------------------
RESULTS = config.get("results", "results")


def out(path):
    return f"{RESULTS}/{path}"


# Each result's path pattern, written once: a rule's output is `path(name)`, and an input function
# names the same file as `path(name, **wildcards)` (numbers in their one spelling, fmt's).
PATHS = {
    "data": "data/{dataset}.safetensors",                    # a data set stored once (digits)
    "classifier": "classifier/{dataset}.safetensors",        # the CNN whose features score it
    "reference": "reference/{dataset}.safetensors",          # its reference statistics
    "base": "{model}/base.safetensors",                      # θ_r
    "synthetic": "{model}/S{S}/synthetic.safetensors",       # S
    "state": "{model}/S{S}/finetune/B{B}.state.safetensors",  # the fine-tune at budget B
    "ckpt": "{model}/S{S}/ckpt/B{B}.safetensors",            # θ_s: the weights of that state
    "merged": "{model}/S{S}/B{B}/w{w}.safetensors",          # θ at one w
    "point": "{model}/S{S}/B{B}/w{w}/g{gamma}.json",         # the metrics of one (w, γ)
    "preview": "{model}/S{S}/B{B}/w{w}/g{gamma}.preview.safetensors",    # its first 100 samples
    "features": "{model}/S{S}/B{B}/w{w}/g{gamma}.features.safetensors",  # its samples' features
    "final": "{model}/S{S}/B{B}/w{w}/g{gamma}.final.json",   # the final evaluation there
    "line": "{model}/S{S}/B{B}/g{gamma}.line.json",          # every w at one (S, B, γ)
    "noise": "{model}/noise/seed{seed}/g{gamma}.json",       # the base at another seed
    "round": "search/{model}/S{S}/B{B}/round{k}.json",       # a search round
}
NUMBERS = {"B", "w", "gamma"}  # wildcards spelt by fmt


def path(name, **wildcards):
    pattern = out(PATHS[name])
    if not wildcards:
        return pattern
    return pattern.format(**{key: fmt(value) if key in NUMBERS else value for key, value in wildcards.items()})


# Settings that do not change what any one job computes stay out of `params`: grids name which
# jobs exist (adding a w must not rerun the other w's evaluations), save intervals only decide
# how much a killed job loses.
NOT_IN_PARAMS = {
    "synthetic": {"sizes"},
    "finetune": {"budgets", "save_every_images", "save_every_minutes"},
    "evaluate": {"w", "gamma", "noise_seeds", "search"},
}


def model_spec(model, *sections, dataset=False):
    """The parts of a model's config one stage depends on, for its `params`: changing any other
    part does not rerun that stage."""
    spec = MODELS[model]
    return {
        "name": model,
        "adapter": spec["adapter"],
        "arch": spec.get("arch", {}),
        "guidance": spec.get("guidance", False),
        # The reference settings belong to the `reference` rule alone.
        **({"dataset_spec": {k: v for k, v in DATASETS[spec["dataset"]].items() if k != "reference"}} if dataset else {}),
        **{
            section: {k: v for k, v in spec[section].items() if k not in NOT_IN_PARAMS.get(section, ())}
            for section in sections
        },
    }


def trained(model):
    """The model whose base and fine-tuned checkpoints `model` evaluates: itself, or the one its
    `training_of` names (an evaluation knob such as IMM's T shares one training)."""
    return MODELS[model].get("training_of", model)


def selftrained_weights(wc):
    """θ_s of a point: the fine-tuned weights of the model whose training it evaluates."""
    return path("ckpt", model=trained(wc.model), S=wc.S, B=wc.B)


def base_weights(model):
    """θ_r of `model`: its own, or that of the first model by name trained the same way (one base
    for models that differ in S, fine-tune or evaluation only)."""
    return path("base", model=neon_config.base_owner(model, MODELS))


# User files (a checkpoint, Inception weights, reference statistics) are not inputs of the rules:
# a dry run must build without them; a run checks them all before its first job (onstart above).
# Their size and mtime go into `params`, so that a replaced file reruns what read it.
def user_file(path):
    try:
        return file_identity(path)
    except OSError:
        return {"path": path, "missing": True}


def base_files(model):
    base = MODELS[model]["base"]
    return {k: user_file(base[k]) for k in ("checkpoint", "source") if k in base}


def dataset_files(dataset):
    spec = DATASETS[dataset]
    return {k: user_file(spec[k]) for k in ("inception_weights", "statistics", "real") if k in spec}


def resource(stage, key, default):
    """A model's `resources.<stage>.<key>` from the config, else the rule's default."""
    return lambda wc: MODELS[wc.model].get("resources", {}).get(stage, {}).get(key, default)


def finetune_start(wildcards):
    """A budget segment starts from the previous budget's state, the first from the base."""
    budgets = neon_config.budgets(MODELS[wildcards.model])
    index = [fmt(b) for b in budgets].index(wildcards.B)
    if index == 0:
        return base_weights(wildcards.model)
    return path("state", model=wildcards.model, S=wildcards.S, B=budgets[index - 1])


# Image data sets (digits) are stored by the `dataset` rule and scored in the features of the
# `classifier` rule's CNN; the 2-D toy needs neither.
STORED_KINDS = {"digits"}


def dataset_inputs(dataset, *what):
    """Named inputs of a job on `dataset`: "data" (the stored data set) and/or "classifier"
    (the feature extractor's weights), for the kinds that have them; none otherwise."""
    if DATASETS[dataset]["kind"] not in STORED_KINDS:
        return {}
    return {key: path(key, dataset=dataset) for key in what}


def get_base_priority(wildcards):
    """1 for models on a stored (image) data set, whose chains are the longest; 0 otherwise."""
    return int(DATASETS[MODELS[wildcards.model]["dataset"]]["kind"] in STORED_KINDS)


def model_inputs(model, *what):
    return dataset_inputs(MODELS[model]["dataset"], *what)


def scoring_inputs(wc):
    """What every evaluation of a model reads besides its weights: the data set's reference and,
    for image data sets, the feature extractor's weights."""
    dataset = MODELS[wc.model]["dataset"]
    return {"reference": path("reference", dataset=dataset), **dataset_inputs(dataset, "classifier")}


def image_models():
    return [m for m, spec in MODELS.items() if DATASETS[spec["dataset"]]["kind"] in STORED_KINDS]


def with_eval_seed(spec, seed):
    """A model's fid params with another evaluation seed (for the seed-noise evaluations)."""
    return {**spec, "evaluate": {**spec["evaluate"], "seed": int(seed)}}


def get_point_weights(wc):
    """The weights a point evaluates: at w = 0 the base itself (a merge at 0 copies it bit for bit,
    so none is run, and the point need not wait for S and the fine-tune), else the merge's output."""
    if float(wc.w) == 0:
        return base_weights(wc.model)
    return path("merged", model=wc.model, S=wc.S, B=wc.B, w=wc.w)


def point_file(model, S, B, w, g, kind="point"):
    """A file of one (w, γ) point: its metrics, or its "preview", "features" or "final"."""
    return path(kind, model=model, S=S, B=B, w=w, gamma=g)


def searches(model):
    """(S, B) of every search of a model."""
    spec = MODELS[model]
    return [(S, B) for S in neon_config.sizes(spec) for B in neon_config.budgets(spec)]


def grid_points(model):
    """(S, B, w, γ) of every point of a model's grid."""
    spec = MODELS[model]
    return [(S, B, w, g) for S, B in searches(model) for w in neon_config.w_grid(spec) for g in neon_config.gammas(spec)]


def metric_files(model):
    """Every point of a model's grid: a file per point, or per (|S|, B, γ) line for models
    evaluated a line a job (the points of models searched by rounds: search_inputs)."""
    spec = MODELS[model]
    if neon_config.per_line(spec):
        return [path("line", model=model, S=S, B=B, gamma=g) for S, B in searches(model)
                for g in neon_config.gammas(spec)]
    return [point_file(model, *point) for point in grid_points(model)]


def grid_models():
    return [m for m in MODELS if not neon_config.uses_rounds(MODELS[m])]


def preview_files(model):
    """The first samples of every evaluation of an image model, for the figure of digits."""
    if model not in image_models() or neon_config.per_line(MODELS[model]):
        return []  # a line job keeps no samples
    return [point_file(model, *point, kind="preview") for point in grid_points(model)]


# -- search rounds (rules/search.smk) ----------------------------------------------------------
def base_points(model, S, B):
    """The base (w = 0) at every γ at this (S, B): evaluated for the table whatever the search."""
    return [point_file(model, S, B, 0, g) for g in neon_config.gammas(MODELS[model])]


def search_round_inputs(wc):
    """Round k reads round k-1 and every point evaluated so far (round k-1's `evaluated` and
    `next`); round 0 only the base and its noise seeds. Reading round k-1 waits for its checkpoint."""
    inputs = {"base": base_points(wc.model, wc.S, wc.B), "noise": noise_files(wc.model)}
    k = int(wc.k)
    if k == 0:
        # θ_s is not read, but every later round merges it: asking for it here starts S and the
        # fine-tune beside the base's evaluation (which needs neither), not after round 0.
        inputs["selftrained"] = selftrained_weights(wc)
    if k > 0:
        previous = checkpoints.search_round.get(model=wc.model, S=wc.S, B=wc.B, k=str(k - 1)).output[0]
        done = read_round(previous)
        points = [p[:2] for p in done["evaluated"]] + done["next"]
        inputs.update(previous=previous, metrics=[point_file(wc.model, wc.S, wc.B, w, g) for w, g in points])
    return inputs


def read_round(path):
    with open(path) as f:
        return json.load(f)


def last_round(model, S, B):
    """The round that finished a search: rounds are asked for one at a time, each only once the
    one before has run and said it was not done (the DAG grows a round per checkpoint)."""
    for k in range(search_settings(model)["max_rounds"]):
        result = read_round(checkpoints.search_round.get(model=model, S=str(S), B=fmt(B), k=str(k)).output[0])
        if result["done"]:
            return result
    raise WorkflowError(f"search of {model} S{S} B{fmt(B)}: no round said it was done")  # the last one always does


def search_settings(model):
    spec = MODELS[model]
    return {**neon_config.search(spec), "w_grid": neon_config.w_grid(spec), "gammas": neon_config.gammas(spec)}


def search_inputs():
    """Named inputs of the aggregate, one function per search (model, S, B): each waits for its
    own rounds only, so searches proceed side by side. The files: the evaluated points' metrics
    (and previews of image models), and the final evaluation (.final.json) where asked for."""

    def files(model, S, B):
        result = last_round(model, S, B)
        points = [point_file(model, S, B, w, g) for w, g, _fid in result["evaluated"]]
        previews = ([point_file(model, S, B, w, g, kind="preview") for w, g, _fid in result["evaluated"]]
                    if model in image_models() else [])
        final = [point_file(model, S, B, *result["best"], kind="final")] if has_final(model) else []
        return points + previews + final

    return {
        f"search_{i}": (lambda wc, m=m, S=S, B=B: files(m, S, B))
        for i, (m, S, B) in enumerate((m, S, B) for m in MODELS if neon_config.uses_rounds(MODELS[m]) for S, B in searches(m))
    }


def has_final(model):
    return neon_config.final_n(MODELS[model]) is not None


def noise_files(model):
    """The base (w = 0) evaluated at the extra seeds `evaluate.noise_seeds`, at every γ."""
    spec = MODELS[model]
    return [
        path("noise", model=model, seed=seed, gamma=g)
        for seed in spec["evaluate"].get("noise_seeds", [])
        for g in neon_config.gammas(spec)
    ]


def all_noise_files():
    return [f for model in MODELS for f in noise_files(model)]


def log(rule, name):
    return out(f"logs/{rule}/{name}.log")


def bench(rule, name):
    return out(f"benchmarks/{rule}/{name}.tsv")
