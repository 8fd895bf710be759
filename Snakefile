# Neon: sample a synthetic set S from a base model, fine-tune on it briefly, and extrapolate
# away from the result: θ = (1+w)·θ_r − w·θ_s, with w (and γ) chosen by FID.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


include: "rules/common.smk"
include: "rules/base.smk"
include: "rules/sample.smk"
include: "rules/finetune.smk"
include: "rules/merge.smk"
include: "rules/fid.smk"
include: "rules/aggregate.smk"


rule all:
    default_target: True
    input:
        rules.aggregate.output,
