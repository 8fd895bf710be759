# The data sets: what every evaluation compares against. Data sets that ship inside a package
# (scikit-learn's digits) are stored once as an artifact with a fixed train / held-out split, and
# the CNN whose features score them is trained here too; the 2-D toy needs neither.


rule store_dataset:
    output:
        path("data"),
    params:
        dataset=get_dataset_settings,
    log:
        log("store_dataset", "data"),
    benchmark:
        bench("store_dataset", "data")
    priority: 2  # every job of the image models waits for it
    threads: 1
    resources:
        runtime=10,
        mem_mb=2000,
    conda:
        "../envs/neon.yaml"
    script:
        "../scripts/store_dataset.py"


rule train_classifier:
    input:
        path("data"),
    output:
        path("classifier"),
    params:
        settings=get_classifier_settings,
    log:
        log("train_classifier", "classifier"),
    benchmark:
        bench("train_classifier", "classifier")
    threads: 1
    resources:
        runtime=30,
        mem_mb=4000,
    conda:
        "../envs/neon.yaml"
    script:
        "../scripts/train_classifier.py"


rule reference_statistics:
    input:
        unpack(get_reference_inputs),
    output:
        # update: kept (and restored) if the job fails on a user file that passed the load-time
        # checks but not its reader (a zip without the statistics in it)
        update(path("reference")),
    params:
        dataset=get_reference_settings,
        files=get_dataset_files,
    log:
        log("reference_statistics", "reference"),
    benchmark:
        bench("reference_statistics", "reference")
    resources:
        runtime=30,
        mem_mb=4000,
    conda:
        "../envs/neon.yaml"
    script:
        "../scripts/reference_statistics.py"
