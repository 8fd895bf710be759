# θ_r, the base generator that Algorithm 1 requires: trained here on real data (the embedded
# models), or converted from the user's checkpoint by the model's adapter (the paper's models).


rule prepare_base:
    input:
        unpack(get_base_inputs),
    output:
        # update: kept (and restored) if the job fails, as a conversion can on a checkpoint that
        # passed the load-time checks but not the adapter (a key that is not in it)
        update(path("base")),
    params:
        model=get_base_settings,
        files=get_base_files,  # a user checkpoint: converted, not trained
    log:
        log("prepare_base", "base"),
    benchmark:
        bench("prepare_base", "base")
    # An image model's chain (its base, S, fine-tune, evaluations) is the run's longest: its base
    # goes before the toys' jobs and the data set's classifier.
    priority: get_base_priority
    threads: 1
    resources:
        runtime=resource("base", "runtime", 240),
        mem_mb=resource("base", "mem_mb", 8000),
        gpu=resource("base", "gpu", 1),
    conda:
        "../envs/neon.yaml"
    script:
        "../scripts/prepare_base.py"
