# Algorithm 1, step 1: S ← |S| samples of θ_r, drawn with its usual inference routine κ.


rule sample_synthetic:
    input:
        base=get_base_weights,
    output:
        path("synthetic"),
    params:
        model=get_sampling_settings,
    log:
        log("sample_synthetic", "synthetic"),
    benchmark:
        bench("sample_synthetic", "synthetic")
    threads: 1
    resources:
        runtime=resource("sample", "runtime", 240),
        mem_mb=resource("sample", "mem_mb", 8000),
        gpu=resource("sample", "gpu", 1),
    conda:
        "../envs/neon.yaml"
    script:
        "../scripts/sample_synthetic.py"
