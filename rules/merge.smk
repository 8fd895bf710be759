# Algorithm 1, step 3: θ ← (1 + w)·θ_r − w·θ_s, one w a job (temporary: its evaluation reads it).


rule merge:
    input:
        base=get_base_weights,
        selftrained=get_selftrained_weights,
    output:
        temp(path("merged")),
    params:
        w=get_w,
        model=get_merge_settings,
    log:
        log("merge", "merged"),
    benchmark:
        bench("merge", "merged")
    group:
        "evaluate"
    threads: 1
    resources:
        runtime=resource("merge", "runtime", 30),
        mem_mb=resource("merge", "mem_mb", 8000),
    conda:
        "../envs/neon.yaml"
    script:
        "../scripts/merge.py"
