rule fid:
    input:
        unpack(scoring_inputs),
        weights=get_point_weights,
    output:
        metrics=path("point"),
        preview=path("preview"),  # the first 100 samples
        # the samples' features: where this point is chosen, the final evaluation starts from them
        features=path("features"),
    params:
        model=lambda wc: model_spec(wc.model, "evaluate", dataset=True),
    log:
        log("fid", "{model}/S{S}/B{B}/w{w}/g{gamma}"),
    benchmark:
        bench("fid", "{model}/S{S}/B{B}/w{w}/g{gamma}")
    group:
        "evaluate"
    threads: 1
    resources:
        runtime=resource("fid", "runtime", 60),
        mem_mb=resource("fid", "mem_mb", 8000),
        gpu=resource("fid", "gpu", 1),
    conda:
        "../envs/neon.yaml"
    script:
        "../neon_steps/fid.py"


# Every w of one (|S|, B, γ) in one job, merged in memory (evaluate.jobs: per_line): for models
# whose evaluation takes milliseconds, where a merge and a fid job per point would spend their
# time starting Python and torch. Adding a w reruns the line; each record equals what the fid
# job of that point writes.
rule fid_line:
    input:
        unpack(scoring_inputs),
        base=lambda wc: base_weights(wc.model),
        selftrained=selftrained_weights,
    output:
        path("line"),
    params:
        model=lambda wc: model_spec(wc.model, "evaluate", dataset=True),
        w=lambda wc: neon_config.w_grid(MODELS[wc.model]),
    log:
        log("fid_line", "{model}/S{S}/B{B}/g{gamma}"),
    benchmark:
        bench("fid_line", "{model}/S{S}/B{B}/g{gamma}")
    threads: 1
    resources:
        runtime=resource("fid", "runtime", 60),
        mem_mb=resource("fid", "mem_mb", 8000),
        gpu=resource("fid", "gpu", 1),
    conda:
        "../envs/neon.yaml"
    script:
        "../neon_steps/fid.py"


# The base model at more evaluation seeds (evaluate.noise_seeds): how much FID moves between
# draws, against which table_a1.csv's improvement is read.
rule fid_noise:
    input:
        unpack(scoring_inputs),
        weights=lambda wc: base_weights(wc.model),
    output:
        metrics=path("noise"),
    params:
        model=lambda wc: with_eval_seed(model_spec(wc.model, "evaluate", dataset=True), wc.seed),
    log:
        log("fid_noise", "{model}/seed{seed}/g{gamma}"),
    benchmark:
        bench("fid_noise", "{model}/seed{seed}/g{gamma}")
    # Ready as soon as the base is, beside the longer way to any result (sample, fine-tune,
    # merge, evaluate): a free core takes that way first.
    priority: -1
    threads: 1
    resources:
        runtime=resource("fid", "runtime", 60),
        mem_mb=resource("fid", "mem_mb", 8000),
        gpu=resource("fid", "gpu", 1),
    conda:
        "../envs/neon.yaml"
    script:
        "../neon_steps/fid.py"
