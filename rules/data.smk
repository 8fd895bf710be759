# Data sets that ship inside a package (scikit-learn's digits) are stored once as an artifact with
# a fixed train / held-out split; the CNN whose features score them is trained here too.


rule dataset:
    output:
        path("data"),
    params:
        # The reference (feature space) settings belong to the classifier and reference rules.
        dataset=lambda wc: {k: v for k, v in DATASETS[wc.dataset].items() if k != "reference"},
    log:
        log("dataset", "{dataset}"),
    benchmark:
        bench("dataset", "{dataset}")
    priority: 2  # every job of the image models waits for it
    threads: 1
    resources:
        runtime=10,
        mem_mb=2000,
    conda:
        "../envs/neon.yaml"
    script:
        "../neon_steps/dataset.py"


rule classifier:
    input:
        path("data"),
    output:
        path("classifier"),
    params:
        settings=lambda wc: DATASETS[wc.dataset].get("reference", {}).get("classifier", {}),
    log:
        log("classifier", "{dataset}"),
    benchmark:
        bench("classifier", "{dataset}")
    threads: 1
    resources:
        runtime=30,
        mem_mb=4000,
    conda:
        "../envs/neon.yaml"
    script:
        "../neon_steps/classifier.py"
