rule aggregate:
    input:
        metrics=[f for model in grid_models() for f in metric_files(model)],
        previews=[f for model in grid_models() for f in preview_files(model)],
        noise=all_noise_files(),
        # one input function per search, so that their rounds run side by side
        **search_inputs(),
    output:
        sweep=out("tables/sweep.csv"),
        table=out("tables/table_a1.csv"),
        figure=out("figures/fid_vs_w.png"),
        budgets=out("figures/fid_vs_budget.png"),
        heatmap=out("figures/fid_w_gamma.png"),
        samples=out("figures/samples.png"),
        summary=out("figures/summary.png"),
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
