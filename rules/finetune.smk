rule finetune:
    input:
        synthetic=out("{model}/S{S}/synthetic.safetensors"),
        start=finetune_start,
    output:
        out("{model}/S{S}/finetune/B{B}.state.safetensors"),
    params:
        model=lambda wc: model_spec(wc.model, "finetune"),
    log:
        log("finetune", "{model}/S{S}/B{B}"),
    benchmark:
        bench("finetune", "{model}/S{S}/B{B}")
    threads: 1
    resources:
        runtime=resource("finetune", "runtime", 240),
        mem_mb=resource("finetune", "mem_mb", 8000),
        gpu=resource("finetune", "gpu", 1),
    conda:
        "../envs/neon.yaml"
    script:
        "../neon_steps/finetune.py"


rule ckpt:
    input:
        out("{model}/S{S}/finetune/B{B}.state.safetensors"),
    output:
        out("{model}/S{S}/ckpt/B{B}.safetensors"),
    log:
        log("ckpt", "{model}/S{S}/B{B}"),
    benchmark:
        bench("ckpt", "{model}/S{S}/B{B}")
    threads: 1
    resources:
        runtime=resource("ckpt", "runtime", 30),
        mem_mb=resource("ckpt", "mem_mb", 8000),
    conda:
        "../envs/neon.yaml"
    script:
        "../neon_steps/ckpt.py"
