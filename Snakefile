# Neon: sample a synthetic set S from a base model, fine-tune on it briefly, and extrapolate
# away from the result: θ = (1+w)·θ_r − w·θ_s, with w (and γ) chosen by FID.
from snakemake.utils import min_version

min_version("9.0")


# The embedded default, unless the command line names another experiment (--configfile): a
# config is one whole experiment, not a patch over the default's models.
if "models" not in config:

    configfile: "config.yaml"


# `snakemake --report results/report.html` after a run: this page, then the tables and figures
# the aggregate marks with report() (captions in report/).
report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/inputs.smk"
include: "rules/search_inputs.smk"
include: "rules/data.smk"
include: "rules/base.smk"
include: "rules/sample.smk"
include: "rules/finetune.smk"
include: "rules/merge.smk"
include: "rules/evaluate.smk"
include: "rules/search.smk"
include: "rules/aggregate.smk"


rule all:
    default_target: True
    input:
        rules.aggregate.output,
