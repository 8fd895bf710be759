# Choosing w (and γ) by FID: each point (w, γ) of θ is sampled and scored against the data set's
# reference. Every point of a model uses the same noise and labels (common random numbers).


rule evaluate_point:
    input:
        # one job: the weights, the reference and the extractor; fanned out: the parts' features
        unpack(get_point_inputs),
    output:
        metrics=path("point"),
        preview=path("preview"),  # the first 100 samples
        # the samples' features: where this point is chosen, the final evaluation starts from them
        features=path("features"),
    params:
        model=get_evaluation_settings,
    log:
        log("evaluate_point", "point"),
    benchmark:
        bench("evaluate_point", "point")
    group:
        get_point_group
    threads: 1
    resources:
        runtime=resource("fid", "runtime", 60),
        mem_mb=resource("fid", "mem_mb", 8000),
        gpu=evaluation_resource("gpu", 1, scoring=0),
    conda:
        "../envs/neon.yaml"
    script:
        "../scripts/evaluate_point.py"


# One part of a point's draw when evaluate.n is above evaluate.images_per_job: a contiguous range
# of shards, sampled and turned into features shard by shard; evaluate_point scores all parts.
rule evaluate_point_part:
    input:
        unpack(get_extractor_inputs),
        weights=get_point_weights,
    output:
        temp(path("point_part")),
    params:
        model=get_evaluation_settings,
        rows=get_part_rows,
    log:
        log("evaluate_point_part", "point_part"),
    benchmark:
        bench("evaluate_point_part", "point_part")
    threads: 1
    resources:
        runtime=resource("fid", "runtime", 60),
        mem_mb=resource("fid", "mem_mb", 8000),
        gpu=resource("fid", "gpu", 1),
    conda:
        "../envs/neon.yaml"
    script:
        "../scripts/evaluate_point_part.py"


# Every w of one (|S|, B, γ) in one job, merged in memory (evaluate.jobs: per_line): for models
# whose evaluation takes milliseconds, where a merge and an evaluation job per point would spend
# their time starting Python and torch. Adding a w reruns the line; each record equals what the
# evaluate_point job of that point writes.
rule evaluate_line:
    input:
        unpack(get_scoring_inputs),
        base=get_base_weights,
        selftrained=get_selftrained_weights,
    output:
        path("line"),
    params:
        model=get_evaluation_settings,
        w=get_line_ws,
    log:
        log("evaluate_line", "line"),
    benchmark:
        bench("evaluate_line", "line")
    threads: 1
    resources:
        runtime=resource("fid", "runtime", 60),
        mem_mb=resource("fid", "mem_mb", 8000),
        gpu=resource("fid", "gpu", 1),
    conda:
        "../envs/neon.yaml"
    script:
        "../scripts/evaluate_line.py"


# The base model at more evaluation seeds (evaluate.noise_seeds): how much FID moves between
# draws, against which table_a1.csv's improvement is read.
rule evaluate_noise_seed:
    input:
        unpack(get_noise_seed_inputs),
    output:
        metrics=path("noise"),
    params:
        model=get_noise_seed_settings,
    log:
        log("evaluate_noise_seed", "noise"),
    benchmark:
        bench("evaluate_noise_seed", "noise")
    # Ready as soon as the base is, beside the longer way to any result (sample, fine-tune,
    # merge, evaluate): a free core takes that way first.
    priority: -1
    threads: 1
    resources:
        runtime=resource("fid", "runtime", 60),
        mem_mb=resource("fid", "mem_mb", 8000),
        gpu=evaluation_resource("gpu", 1, scoring=0),
    conda:
        "../envs/neon.yaml"
    script:
        "../scripts/evaluate_noise_seed.py"


# One part of the base's draw at a noise seed, as evaluate_point_part is of a point's.
rule evaluate_noise_seed_part:
    input:
        unpack(get_extractor_inputs),
        weights=get_base_weights,
    output:
        temp(path("noise_part")),
    params:
        model=get_noise_seed_settings,
        rows=get_part_rows,
    log:
        log("evaluate_noise_seed_part", "noise_part"),
    benchmark:
        bench("evaluate_noise_seed_part", "noise_part")
    priority: -1
    threads: 1
    resources:
        runtime=resource("fid", "runtime", 60),
        mem_mb=resource("fid", "mem_mb", 8000),
        gpu=resource("fid", "gpu", 1),
    conda:
        "../envs/neon.yaml"
    script:
        "../scripts/evaluate_noise_seed_part.py"
