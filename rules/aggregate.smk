rule aggregate:
    input:
        metrics=all_metric_files(),
        previews=all_preview_files(),
        noise=all_noise_files(),
    output:
        sweep=out("tables/sweep.csv"),
        table=out("tables/table_a1.csv"),
        figure=out("figures/fid_vs_w.png"),
        budgets=out("figures/fid_vs_budget.png"),
        heatmap=out("figures/fid_w_gamma.png"),
        samples=out("figures/samples.png"),
    params:
        base_budgets_mi={name: spec["base"]["images"] for name, spec in MODELS.items()},
        image_models=image_models(),
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
