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
# first samples (same seed, same shards), so only the rest is drawn: here, or, when they are more
# than evaluate.images_per_job, by evaluate_final_part jobs whose features this job scores.
rule evaluate_final:
    input:
        unpack(get_final_inputs),
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
        gpu=evaluation_resource("gpu", 1, scoring=0, final=True),
    conda:
        "../envs/neon.yaml"
    script:
        "../scripts/evaluate_final.py"


# One part of the samples a final evaluation adds past the search's n: a contiguous range of
# shards of the same draw, with their share of the final's labels.
rule evaluate_final_part:
    input:
        unpack(get_extractor_inputs),
        weights=get_point_weights,
    output:
        temp(path("final_part")),
    params:
        model=get_evaluation_settings,
        n=get_final_n,
        rows=get_final_part_rows,
    log:
        log("evaluate_final_part", "final_part"),
    benchmark:
        bench("evaluate_final_part", "final_part")
    threads: 1
    resources:
        runtime=resource("fid", "runtime", 60),
        mem_mb=resource("fid", "mem_mb", 8000),
        gpu=resource("fid", "gpu", 1),
    conda:
        "../envs/neon.yaml"
    script:
        "../scripts/evaluate_final_part.py"
