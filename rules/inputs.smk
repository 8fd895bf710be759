# The input and params functions of each rule, step by step in Algorithm 1's order (the search's:
# search_inputs.smk). Apart from the rules, as `snakemake --lint` asks: a snakefile holds rules or
# functions, not both.


# -- data sets (rules/data.smk) -------------------------------------------------------------------
# Image data sets (digits) are stored by the `store_dataset` rule and scored in the features of
# the `train_classifier` rule's CNN; the 2-D toy needs neither.
STORED_KINDS = {"digits"}


def dataset_inputs(dataset, *what):
    """Named inputs of a job on `dataset`: "data" (the stored data set) and/or "classifier"
    (the feature extractor's weights), for the kinds that have them; none otherwise."""
    if DATASETS[dataset]["kind"] not in STORED_KINDS:
        return {}
    return {key: path(key, dataset=dataset) for key in what}


def is_image_model(model):
    return DATASETS[MODELS[model]["dataset"]]["kind"] in STORED_KINDS


def get_dataset_settings(wc):
    return dataset_settings(wc.dataset)


def get_reference_settings(wc):
    return DATASETS[wc.dataset]


def get_classifier_settings(wc):
    return DATASETS[wc.dataset].get("reference", {}).get("classifier", {})


def get_reference_inputs(wc):
    return dataset_inputs(wc.dataset, "data", "classifier")


def get_dataset_files(wc):
    """The user files a data set names (Inception weights, statistics, real images)."""
    spec = DATASETS[wc.dataset]
    return {k: user_file(spec[k]) for k in ("inception_weights", "statistics", "real") if k in spec}


# -- θ_r (rules/base.smk) -------------------------------------------------------------------------
def get_base_inputs(wc):
    return dataset_inputs(MODELS[wc.model]["dataset"], "data")


def get_base_settings(wc):
    return model_spec(wc.model, "base", dataset=True)


def get_base_files(wc):
    """The user files a base names (a checkpoint, a codebase's source tree)."""
    base = MODELS[wc.model]["base"]
    return {k: user_file(base[k]) for k in ("checkpoint", "source") if k in base}


def get_base_priority(wc):
    """1 for models on a stored (image) data set, whose chains are the longest; 0 otherwise."""
    return int(is_image_model(wc.model))


# -- S (rules/sample.smk) -------------------------------------------------------------------------
def get_sampling_settings(wc):
    return model_spec(wc.model, "synthetic")


def get_synthetic_parts(wc):
    """The parts of one S, each a sample_synthetic job."""
    count = neon_synthetic.part_count(MODELS[wc.model]["synthetic"], int(wc.S))
    return [path("synthetic_part", model=wc.model, S=wc.S, part=part) for part in range(count)]


# -- the fine-tune (rules/finetune.smk) -----------------------------------------------------------
def get_finetune_start(wc):
    """A budget segment starts from the previous budget's state, the first from the base."""
    budgets = neon_config.budgets(MODELS[wc.model])
    index = [fmt(b) for b in budgets].index(wc.B)
    if index == 0:
        return base_weights(wc.model)
    return path("state", model=wc.model, S=wc.S, B=budgets[index - 1])


def get_finetune_settings(wc):
    return model_spec(wc.model, "finetune")


# -- the merge (rules/merge.smk) ------------------------------------------------------------------
def get_w(wc):
    return [float(wc.w)]


def get_merge_settings(wc):
    return model_spec(wc.model)


# -- evaluations (rules/evaluate.smk) -------------------------------------------------------------
def get_evaluation_settings(wc):
    return model_spec(wc.model, "evaluate", dataset=True)


def get_scoring_inputs(wc):
    """What every evaluation of a model reads besides its weights: the data set's reference and,
    for image data sets, the feature extractor's weights."""
    dataset = MODELS[wc.model]["dataset"]
    return {"reference": path("reference", dataset=dataset), **dataset_inputs(dataset, "classifier")}


def get_point_weights(wc):
    """The weights a point evaluates: at w = 0 the base itself (a merge at 0 copies it bit for bit,
    so none is run, and the point need not wait for S and the fine-tune), else the merge's output."""
    if float(wc.w) == 0:
        return base_weights(wc.model)
    return path("merged", model=wc.model, S=wc.S, B=wc.B, w=wc.w)


def get_extractor_inputs(wc):
    """What a job that extracts features reads besides its weights: the feature extractor's
    weights, for image data sets (none for the toy)."""
    return dataset_inputs(MODELS[wc.model]["dataset"], "classifier")


# A large evaluation fans out (evaluate.images_per_job below its sample count): part jobs draw a
# contiguous range of shards each and write their features (temporary), and the evaluation's own
# job scores them all, drawing nothing. Below that it is one job, as the part jobs' union is.
def evaluation_parts(model, count):
    """How many part jobs draw `count` samples of a model's evaluation: 1 for one job."""
    return neon_synthetic.part_count(MODELS[model]["evaluate"], count)


def fanned_out(model):
    """Whether a model's evaluations at evaluate.n are drawn by part jobs."""
    return evaluation_parts(model, MODELS[model]["evaluate"]["n"]) > 1


def part_rows(model, count, part, first=0):
    """The rows [start, stop) of the draw that part `part` of `count` samples from row `first` draws."""
    if not 0 <= part < evaluation_parts(model, count):
        raise WorkflowError(f"{model}: no part {part} of an evaluation of {count} samples")
    rows = neon_synthetic.part_range(MODELS[model]["evaluate"], count, part)
    return [first + rows.start, first + rows.stop]


def scored_parts(wc, kind, parts, **wildcards):
    """The inputs of the job that scores `parts` part files of `kind`: the reference and the parts."""
    dataset = MODELS[wc.model]["dataset"]
    return {
        "reference": path("reference", dataset=dataset),
        "parts": [path(kind, **wildcards, part=part) for part in range(parts)],
    }


def get_point_inputs(wc):
    """One job: its weights and what scoring reads; fanned out: the part jobs' features."""
    if fanned_out(wc.model):
        parts = evaluation_parts(wc.model, MODELS[wc.model]["evaluate"]["n"])
        return scored_parts(wc, "point_part", parts, model=wc.model, S=wc.S, B=wc.B, w=wc.w, gamma=wc.gamma)
    return {**get_scoring_inputs(wc), "weights": get_point_weights(wc)}


def get_point_group(wc):
    """A one-job point runs in its merge's group (a SLURM job of several points); a fanned-out
    one is in none, so that its part jobs, outside the group, run side by side."""
    return None if fanned_out(wc.model) else "evaluate"


def get_part_rows(wc):
    return part_rows(wc.model, MODELS[wc.model]["evaluate"]["n"], int(wc.part))


def evaluation_resource(key, default, scoring, final=False):
    """A model's `resources.fid.<key>` for an evaluation job that draws, and `scoring` for one that
    scores its part jobs' features only (no sampling: no GPU); `final`: of a final evaluation."""
    drawing = resource("fid", key, default)
    fanned = final_fanned_out if final else fanned_out
    return lambda wc: scoring if fanned(wc.model) else drawing(wc)


def get_line_ws(wc):
    return neon_config.w_grid(MODELS[wc.model])


def noise_files(model):
    """The base (w = 0) evaluated at the extra seeds `evaluate.noise_seeds`, at every γ."""
    spec = MODELS[model]
    return [
        path("noise", model=model, seed=seed, gamma=g)
        for seed in spec["evaluate"].get("noise_seeds", [])
        for g in neon_config.gammas(spec)
    ]


def get_noise_seed_settings(wc):
    """A model's evaluation settings at another evaluation seed."""
    spec = get_evaluation_settings(wc)
    return {**spec, "evaluate": {**spec["evaluate"], "seed": int(wc.seed)}}


def get_noise_seed_inputs(wc):
    """The base's weights and what scoring reads; fanned out: the part jobs' features."""
    if fanned_out(wc.model):
        parts = evaluation_parts(wc.model, MODELS[wc.model]["evaluate"]["n"])
        return scored_parts(wc, "noise_part", parts, model=wc.model, seed=wc.seed, gamma=wc.gamma)
    return {**get_scoring_inputs(wc), "weights": get_base_weights(wc)}


# -- the aggregate (rules/aggregate.smk) ----------------------------------------------------------
def grid_points(model):
    """(S, B, w, γ) of every point of a model's grid."""
    spec = MODELS[model]
    return [
        (S, B, w, g) for S, B in searches(model) for w in neon_config.w_grid(spec) for g in neon_config.gammas(spec)
    ]


def grid_models():
    return [m for m in MODELS if not neon_config.uses_rounds(MODELS[m])]


def metric_files(model):
    """Every point of a model's grid: a file per point, or per (|S|, B, γ) line for models
    evaluated a line a job (the points of searched models: get_search_results)."""
    spec = MODELS[model]
    if neon_config.per_line(spec):
        return [
            path("line", model=model, S=S, B=B, gamma=g) for S, B in searches(model) for g in neon_config.gammas(spec)
        ]
    return [point_file(model, *point) for point in grid_points(model)]


def preview_files(model):
    """The first samples of every evaluation of an image model, for the figure of digits."""
    if not is_image_model(model) or neon_config.per_line(MODELS[model]):
        return []  # a line job keeps no samples
    return [point_file(model, *point, kind="preview") for point in grid_points(model)]
