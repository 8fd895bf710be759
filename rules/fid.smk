rule fid:
    input:
        weights=out("{model}/S{S}/B{B}/w{w}.safetensors"),
        reference=lambda wc: out(f"reference/{MODELS[wc.model]['dataset']}.safetensors"),
    output:
        out("{model}/S{S}/B{B}/w{w}/g{gamma}.json"),
    params:
        model=lambda wc: model_spec(wc.model, "evaluate", dataset=True),
    log:
        log("fid", "{model}/S{S}/B{B}/w{w}/g{gamma}"),
    benchmark:
        bench("fid", "{model}/S{S}/B{B}/w{w}/g{gamma}")
    group:
        "evaluate"
    threads: 1
    resources:
        runtime=60,
        mem_mb=8000,
        gpu=1,
    conda:
        "../envs/neon.yaml"
    script:
        "../neon_steps/fid.py"
