rule evaluate:
    """Accuracy, ECE, worst-class and OOD accuracy, sparsity and FLOPs of one model."""
    input:
        settings="results/{experiment}/settings.json",
        data="results/{experiment}/data.pt",
        checkpoint=f"{RUN}/{{model_dir}}/model.pt",
        ood=ood_input,
    output:
        update(f"{RUN}/{{model_dir}}/metrics.json"),
    log:
        f"{RUN}/logs/evaluate/{{model_dir}}.log",
    benchmark:
        f"{RUN}/benchmarks/evaluate/{{model_dir}}.tsv"
    conda:
        ENV
    threads: RESOURCES["light"]["threads"]
    resources:
        mem_mb=RESOURCES["light"]["mem_mb"],
        runtime=lambda wildcards, attempt: RESOURCES["light"]["runtime"] * attempt,
        gpu=RESOURCES["light"]["gpu"],
    params:
        ood=ood_option,
    shell:
        "python -m sparse_soups evaluate --settings {input.settings} --data {input.data}"
        " --checkpoint {input.checkpoint} {params.ood} --threads {threads} --out {output}"
        " > {log} 2>&1"
