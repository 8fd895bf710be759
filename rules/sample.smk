rule sample:
    input:
        base=lambda wc: base_weights(wc.model),
    output:
        path("synthetic"),
    params:
        model=lambda wc: model_spec(wc.model, "synthetic"),
    log:
        log("sample", "{model}/S{S}"),
    benchmark:
        bench("sample", "{model}/S{S}")
    threads: 1
    resources:
        runtime=resource("sample", "runtime", 240),
        mem_mb=resource("sample", "mem_mb", 8000),
        gpu=resource("sample", "gpu", 1),
    conda:
        "../envs/neon.yaml"
    script:
        "../neon_steps/sample.py"
