rule merge:
    input:
        base=lambda wc: base_weights(wc.model),
        selftrained=selftrained_weights,
    output:
        temp(path("merged")),
    params:
        w=lambda wc: [float(wc.w)],
        model=lambda wc: model_spec(wc.model),
    log:
        log("merge", "{model}/S{S}/B{B}/w{w}"),
    benchmark:
        bench("merge", "{model}/S{S}/B{B}/w{w}")
    group:
        "evaluate"
    threads: 1
    resources:
        runtime=resource("merge", "runtime", 30),
        mem_mb=resource("merge", "mem_mb", 8000),
    conda:
        "../envs/neon.yaml"
    script:
        "../neon_steps/merge.py"
