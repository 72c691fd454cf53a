rule evaluate:
    """Accuracy, ECE, worst-class and OOD accuracy, sparsity and FLOPs of one model."""
    input:
        **stage_inputs("evaluate"),
        checkpoint=f"{layout.RUN}/{{model_dir}}/{layout.MODEL_FILE}",
        ood=ood_input,
    output:
        update(f"{layout.RUN}/{{model_dir}}/{layout.METRICS_FILE}"),
    log:
        run_log("evaluate/{model_dir}"),
    conda:
        ENV
    threads: RESOURCES["light"]["threads"]
    resources:
        **job_resources("light"),
    params:
        ood=ood_option,
    shell:
        "sparse-soups evaluate --settings {input.settings} --data {input.data}"
        " --checkpoint {input.checkpoint} {params.ood} --threads {threads} --out {output}"
        " > {log} 2>&1"
