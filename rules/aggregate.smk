# The results: every evaluated point into tables/sweep.csv and the paper's Table A.1
# (tables/table_a1.csv), the figures, and the report's pages.


rule aggregate:
    input:
        *map(unpack, get_search_results()),
        metrics=[f for model in grid_models() for f in metric_files(model)],
        previews=[f for model in grid_models() for f in preview_files(model)],
        noise=[f for model in MODELS for f in noise_files(model)],
    # report(): what `snakemake --report` shows, each with its caption under report/. Tables have
    # one label only: with two results in a category, a second label that differs between them
    # would become an on/off toggle in the report's list instead of a column.
    output:
        sweep=report(
            out("tables/sweep.csv"),
            caption="../report/sweep.rst",
            category="Tables",
            labels={"table": "sweep.csv"},
        ),
        table=report(
            out("tables/table_a1.csv"),
            caption="../report/table_a1.rst",
            category="Tables",
            labels={"table": "table_a1.csv"},
        ),
        figure=report(
            out("figures/fid_vs_w.png"),
            caption="../report/fid_vs_w.rst",
            category="Figures",
            labels={"figure": "fid_vs_w.png", "shows": "FID, precision, recall against w"},
        ),
        budgets=report(
            out("figures/fid_vs_budget.png"),
            caption="../report/fid_vs_budget.rst",
            category="Figures",
            labels={"figure": "fid_vs_budget.png", "shows": "best FID against the budget B"},
        ),
        heatmap=report(
            out("figures/fid_w_gamma.png"),
            caption="../report/fid_w_gamma.rst",
            category="Figures",
            labels={"figure": "fid_w_gamma.png", "shows": "FID over (w, γ)"},
        ),
        samples=report(
            out("figures/samples.png"),
            caption="../report/samples.rst",
            category="Figures",
            labels={"figure": "samples.png", "shows": "generated digits, base beside Neon"},
        ),
        summary=report(
            out("figures/summary.png"),
            caption="../report/summary.rst",
            category="Summary",
            labels={"figure": "summary.png", "shows": "the run on one page"},
        ),
    params:
        base_budgets_mi={name: MODELS[name]["base"]["images"] for name in sorted(MODELS)},
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
        "../scripts/aggregate.py"
