rule merge:
    input:
        base=out("{model}/base.safetensors"),
        selftrained=out("{model}/S{S}/ckpt/B{B}.safetensors"),
    output:
        temp(out("{model}/S{S}/B{B}/w{w}.safetensors")),
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
        runtime=30,
        mem_mb=8000,
    conda:
        "../envs/neon.yaml"
    script:
        "../neon_steps/merge.py"
