# Algorithm 1, step 2: θ_s ← FineTune(θ_r, S, B), one budget segment a job: the segment to B_k
# starts from the saved state at B_(k-1), so adding a larger B trains one more segment.
# With resources.finetune.gpu: G, the job runs G processes (one per GPU) sharing each batch,
# each with a core of its own (threads: G, sbatch --cpus-per-task).


rule finetune_segment:
    input:
        synthetic=path("synthetic"),
        parts=get_synthetic_parts,
        start=get_finetune_start,
    output:
        path("state"),
    params:
        model=get_finetune_settings,
    log:
        log("finetune_segment", "state"),
    benchmark:
        bench("finetune_segment", "state")
    threads: lambda wildcards: max(1, resource("finetune", "gpu", 1)(wildcards))
    resources:
        runtime=resource("finetune", "runtime", 240),
        mem_mb=resource("finetune", "mem_mb", 8000),
        gpu=resource("finetune", "gpu", 1),
    conda:
        "../envs/neon.yaml"
    script:
        "../scripts/finetune_segment.py"


# θ_s at B: the weights of the state, without the optimizer, in the base's layout.
rule extract_selftrained:
    input:
        path("state"),
    output:
        path("ckpt"),
    log:
        log("extract_selftrained", "ckpt"),
    benchmark:
        bench("extract_selftrained", "ckpt")
    threads: 1
    resources:
        runtime=resource("ckpt", "runtime", 30),
        mem_mb=resource("ckpt", "mem_mb", 8000),
    conda:
        "../envs/neon.yaml"
    script:
        "../scripts/extract_selftrained.py"
