# The (w, γ) search of one (model, S, B), one round a checkpoint: a round reads every FID
# evaluated so far, replays the strategy (neon_steps/search.py) and names the next points, whose
# fid jobs the next round asks for. Points are ordinary fid outputs, so a point evaluated by any
# round, mode or grid is never evaluated again.
checkpoint search_round:
    input:
        unpack(search_round_inputs),
    output:
        path("round"),
    params:
        search=lambda wc: search_settings(wc.model),
    log:
        log("search_round", "{model}/S{S}/B{B}/round{k}"),
    benchmark:
        bench("search_round", "{model}/S{S}/B{B}/round{k}")
    localrule: True
    threads: 1
    resources:
        runtime=5,
        mem_mb=1000,
    conda:
        "../envs/neon.yaml"
    script:
        "../neon_steps/search_round.py"


# The chosen point at the final sample count (search.final_n): the search's features are the
# first samples (same seed, same shards), so only the rest is drawn.
rule fid_final:
    input:
        unpack(scoring_inputs),
        weights=get_point_weights,
        search=path("features"),
    output:
        metrics=path("final"),
    params:
        model=lambda wc: model_spec(wc.model, "evaluate", dataset=True),
        n=lambda wc: neon_config.final_n(MODELS[wc.model]),
    log:
        log("fid_final", "{model}/S{S}/B{B}/w{w}/g{gamma}"),
    benchmark:
        bench("fid_final", "{model}/S{S}/B{B}/w{w}/g{gamma}")
    threads: 1
    resources:
        runtime=240,
        mem_mb=8000,
        gpu=1,
    conda:
        "../envs/neon.yaml"
    script:
        "../neon_steps/fid.py"
