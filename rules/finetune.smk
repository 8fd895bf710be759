rule finetune:
    input:
        synthetic=path("synthetic"),
        start=finetune_start,
    output:
        path("state"),
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
        path("state"),
    output:
        path("ckpt"),
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
