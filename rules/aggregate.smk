rule aggregate:
    input:
        all_metric_files(),
    output:
        sweep=out("tables/sweep.csv"),
        table=out("tables/table_a1.csv"),
        figure=out("figures/fid_vs_w.png"),
    params:
        base_budgets_mi={name: spec["base"]["images"] for name, spec in MODELS.items()},
    log:
        log("aggregate", "aggregate"),
    benchmark:
        bench("aggregate", "aggregate")
    localrule: True
    resources:
        runtime=10,
        mem_mb=4000,
    conda:
        "../envs/neon.yaml"
    script:
        "../neon_steps/aggregate.py"
