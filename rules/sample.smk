# Algorithm 1, step 1: S ← |S| samples of θ_r, drawn with its usual inference routine κ, by one
# job per `synthetic.images_per_job` images (a contiguous range of shards each), listed in a manifest.


rule sample_synthetic:
    input:
        base=get_base_weights,
    output:
        path("synthetic_part"),
    params:
        model=get_sampling_settings,
    log:
        log("sample_synthetic", "synthetic_part"),
    benchmark:
        bench("sample_synthetic", "synthetic_part")
    threads: 1
    resources:
        runtime=resource("sample", "runtime", 240),
        mem_mb=resource("sample", "mem_mb", 8000),
        gpu=resource("sample", "gpu", 1),
    conda:
        "../envs/neon.yaml"
    script:
        "../scripts/sample_synthetic.py"


# Reads the parts' headers only: no torch, no GPU, on the submitting machine.
rule gather_synthetic:
    input:
        parts=get_synthetic_parts,
    output:
        path("synthetic"),
    log:
        log("gather_synthetic", "synthetic"),
    localrule: True
    threads: 1
    conda:
        "../envs/neon.yaml"
    script:
        "../scripts/gather_synthetic.py"
