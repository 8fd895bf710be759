# The (w, γ) search of one (model, S, B), one round a checkpoint: a round reads every FID
# evaluated so far, replays the strategy (neon_steps/search.py) and names the next points, whose
# evaluations the next round asks for. Points are ordinary evaluate_point outputs, so a point
# evaluated by any round, mode or grid is never evaluated again.


checkpoint search_round:
    input:
        unpack(get_round_inputs),
    output:
        path("round"),
    params:
        search=get_search_settings,
    log:
        log("search_round", "round"),
    benchmark:
        bench("search_round", "round")
    localrule: True
    threads: 1
    resources:
        runtime=5,
        mem_mb=1000,
    conda:
        "../envs/neon.yaml"
    script:
        "../scripts/search_round.py"


# The chosen point at the final sample count (search.final_n): the search's features are the
# first samples (same seed, same shards), so only the rest is drawn.
rule evaluate_final:
    input:
        unpack(get_scoring_inputs),
        weights=get_point_weights,
        search=path("features"),
    output:
        metrics=path("final"),
    params:
        model=get_evaluation_settings,
        n=get_final_n,
    log:
        log("evaluate_final", "final"),
    benchmark:
        bench("evaluate_final", "final")
    threads: 1
    resources:
        runtime=240,
        mem_mb=8000,
        gpu=1,
    conda:
        "../envs/neon.yaml"
    script:
        "../scripts/evaluate_final.py"
