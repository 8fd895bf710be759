rule reference:
    input:
        unpack(lambda wc: dataset_inputs(wc.dataset, "data", "classifier")),
    output:
        # update: kept (and restored) if the job fails on a user file that passed the load-time
        # checks but not its reader (a zip without the statistics in it)
        update(path("reference")),
    params:
        dataset=lambda wc: DATASETS[wc.dataset],
        files=lambda wc: dataset_files(wc.dataset),
    log:
        log("reference", "{dataset}"),
    benchmark:
        bench("reference", "{dataset}")
    resources:
        runtime=30,
        mem_mb=4000,
    conda:
        "../envs/neon.yaml"
    script:
        "../neon_steps/reference.py"


rule base:
    input:
        unpack(lambda wc: model_inputs(wc.model, "data")),
    output:
        # update: kept (and restored) if the job fails, as a conversion can on a checkpoint that
        # passed the load-time checks but not the adapter (a key that is not in it)
        update(path("base")),
    params:
        model=lambda wc: model_spec(wc.model, "base", dataset=True),
        files=lambda wc: base_files(wc.model),  # a user checkpoint: converted, not trained
    log:
        log("base", "{model}"),
    benchmark:
        bench("base", "{model}")
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
        "../neon_steps/base.py"
