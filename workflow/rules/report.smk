# Tables and figures of each experiment, from its metrics files alone (`sparse-soups
# report`). One rule per report part, so each declares a fixed set of files; which parts
# an experiment gets follows its settings (`reporting.parts.settings_parts`, and
# `report_outputs` in common.smk). Every rule reads all metrics files of the experiment: when one changes,
# only these jobs rerun.
report: "../report/workflow.rst"


rule report:
    """Main tables (test accuracy, ECE) and figures of one experiment."""
    input:
        metrics=experiment_metrics,
    output:
        **report_outputs("main"),
    log:
        "results/{experiment}/logs/report_main.log",
    conda:
        ENV
    threads: 1
    resources:
        **job_resources("light"),
    params:
        part="main",
        about=experiment_summary,
    shell:
        "sparse-soups report --part {params.part}"
        " --out results/{wildcards.experiment}/report {input.metrics} > {log} 2>&1"


use rule report as report_ood with:
    output:
        **report_outputs("ood"),
    log:
        "results/{experiment}/logs/report_ood.log",
    params:
        part="ood",
        about=experiment_summary,


use rule report as report_ablation_m with:
    output:
        **report_outputs("ablation_m"),
    log:
        "results/{experiment}/logs/report_ablation_m.log",
    params:
        part="ablation_m",
        about=experiment_summary,


use rule report as report_subset_soups with:
    output:
        **report_outputs("subset_soups"),
    log:
        "results/{experiment}/logs/report_subset_soups.log",
    params:
        part="subset_soups",
        about=experiment_summary,


use rule report as report_fairness with:
    output:
        **report_outputs("fairness"),
    log:
        "results/{experiment}/logs/report_fairness.log",
    params:
        part="fairness",
        about=experiment_summary,


use rule report as report_merging with:
    output:
        **report_outputs("merging"),
    log:
        "results/{experiment}/logs/report_merging.log",
    params:
        part="merging",
        about=experiment_summary,


use rule report as report_ablation_vary with:
    output:
        **report_outputs("ablation_vary"),
    log:
        "results/{experiment}/logs/report_ablation_vary.log",
    params:
        part="ablation_vary",
        about=experiment_summary,


rule report_training:
    """Training curves of one experiment, from the history.csv of every trained model."""
    input:
        histories=experiment_histories,
    output:
        **report_outputs("training"),
    log:
        "results/{experiment}/logs/report_training.log",
    conda:
        ENV
    threads: 1
    resources:
        **job_resources("light"),
    params:
        part="training",
        about=experiment_summary,
    shell:
        "sparse-soups report --part {params.part}"
        " --out results/{wildcards.experiment}/report {input.histories} > {log} 2>&1"


use rule report_training as report_training_gmp with:
    output:
        **report_outputs("training_gmp"),
    log:
        "results/{experiment}/logs/report_training_gmp.log",
    params:
        part="training_gmp",
        about=experiment_summary,
