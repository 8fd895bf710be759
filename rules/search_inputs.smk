# The search's input functions (rules/search.smk): which rounds and points a search has asked for so far.
# Apart from the rules, as `snakemake --lint` asks: a snakefile holds rules or functions.


def searches(model):
    """(S, B) of every search of a model."""
    spec = MODELS[model]
    return [(S, B) for S in neon_config.sizes(spec) for B in neon_config.budgets(spec)]


def search_settings(model):
    spec = MODELS[model]
    return {**neon_config.search(spec), "w_grid": neon_config.w_grid(spec), "gammas": neon_config.gammas(spec)}


def get_search_settings(wc):
    return search_settings(wc.model)


def base_points(model, S, B):
    """The base (w = 0) at every γ at this (S, B): evaluated for the table whatever the search."""
    return [point_file(model, S, B, 0, g) for g in neon_config.gammas(MODELS[model])]


def read_round(path):
    with open(path) as f:
        return json.load(f)


def get_round_inputs(wc):
    """Round k reads round k-1 and every point evaluated so far (round k-1's `evaluated` and
    `next`); round 0 only the base and its noise seeds. Reading round k-1 waits for its checkpoint."""
    inputs = {"base": base_points(wc.model, wc.S, wc.B), "noise": noise_files(wc.model)}
    k = int(wc.k)
    if k == 0:
        # θ_s is not read, but every later round merges it: asking for it here starts S and the
        # fine-tune beside the base's evaluation (which needs neither), not after round 0.
        inputs["selftrained"] = get_selftrained_weights(wc)
    if k > 0:
        previous = checkpoints.search_round.get(model=wc.model, S=wc.S, B=wc.B, k=str(k - 1)).output[0]
        done = read_round(previous)
        points = [p[:2] for p in done["evaluated"]] + done["next"]
        inputs.update(previous=previous, metrics=[point_file(wc.model, wc.S, wc.B, w, g) for w, g in points])
    return inputs


def last_round(model, S, B):
    """The round that finished a search: rounds are asked for one at a time, each only once the
    one before has run and said it was not done (the DAG grows a round per checkpoint)."""
    for k in range(search_settings(model)["max_rounds"]):
        result = read_round(checkpoints.search_round.get(model=model, S=str(S), B=fmt(B), k=str(k)).output[0])
        if result["done"]:
            return result
    raise WorkflowError(f"search of {model} S{S} B{fmt(B)}: no round said it was done")  # the last one always does


def has_final(model):
    return neon_config.final_n(MODELS[model]) is not None


def get_final_n(wc):
    return neon_config.final_n(MODELS[wc.model])


def final_added(model):
    """The samples a final evaluation adds to the search's: final_n - n."""
    return neon_config.final_n(MODELS[model]) - MODELS[model]["evaluate"]["n"]


def final_fanned_out(model):
    """Whether a model's final evaluation draws its added samples by part jobs."""
    return evaluation_parts(model, final_added(model)) > 1


def get_final_inputs(wc):
    """The search's features at the chosen point and, for one job, its weights and what scoring
    reads; fanned out, the part jobs' features of the added samples instead of the weights."""
    search = {"search": point_file(wc.model, wc.S, wc.B, wc.w, wc.gamma, kind="features")}
    if final_fanned_out(wc.model):
        parts = evaluation_parts(wc.model, final_added(wc.model))
        wildcards = dict(model=wc.model, S=wc.S, B=wc.B, w=wc.w, gamma=wc.gamma)
        return {**search, **scored_parts(wc, "final_part", parts, **wildcards)}
    return {**search, **get_scoring_inputs(wc), "weights": get_point_weights(wc)}


def get_final_part_rows(wc):
    """Rows of the final's draw past the search's n: the added samples' part, from row n on."""
    n = MODELS[wc.model]["evaluate"]["n"]
    return part_rows(wc.model, final_added(wc.model), int(wc.part), first=n)


def search_results(model, S, B):
    """A search's files for the aggregate, by role: its evaluated points' metrics (and previews of
    image models), and the final evaluation of its chosen point where one is asked for."""
    result = last_round(model, S, B)
    evaluated = [(w, g) for w, g, _fid in result["evaluated"]]
    return {
        "metrics": [point_file(model, S, B, w, g) for w, g in evaluated],
        "previews": (
            [point_file(model, S, B, w, g, kind="preview") for w, g in evaluated] if is_image_model(model) else []
        ),
        "final": [point_file(model, S, B, *result["best"], kind="final")] if has_final(model) else [],
    }


def get_search_results():
    """Input functions of the aggregate, one per search (model, S, B), each naming its files
    `<role>__search<i>`: each waits for its own rounds only, so searches proceed side by side."""
    return [
        (
            lambda wc, i=i, m=m, S=S, B=B: {
                f"{role}__search{i}": files for role, files in search_results(m, S, B).items()
            }
        )
        for i, (m, S, B) in enumerate(
            (m, S, B) for m in MODELS if neon_config.uses_rounds(MODELS[m]) for S, B in searches(m)
        )
    ]
