rule merge:
    input:
        base=lambda wc: base_weights(wc.model),
        selftrained=lambda wc: trained_file(wc.model, f"S{wc.S}/ckpt/B{wc.B}.safetensors"),
    output:
        temp(out(MERGED)),
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
