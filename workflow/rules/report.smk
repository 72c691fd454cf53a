rule report:
    """Results table (CSV, Markdown) and accuracy-vs-sparsity figure of one experiment,
    from its metrics files alone."""
    input:
        metrics=experiment_metrics,
    output:
        table_md=report(
            "results/{experiment}/report/table.md",
            caption="../report/table.rst",
            category="Results",
        ),
        table_csv="results/{experiment}/report/table.csv",
        results_csv="results/{experiment}/report/results.csv",
        figure=report(
            "results/{experiment}/report/accuracy_vs_sparsity.png",
            caption="../report/figure.rst",
            category="Results",
        ),
    log:
        "results/{experiment}/logs/report.log",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=RESOURCES["light"]["mem_mb"],
        runtime=lambda wildcards, attempt: RESOURCES["light"]["runtime"] * attempt,
        gpu=RESOURCES["light"]["gpu"],
    shell:
        "python -m sparse_soups report --out results/{wildcards.experiment}/report"
        " {input.metrics} > {log} 2>&1"
