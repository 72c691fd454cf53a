rule evaluate:
    """Test and validation accuracy and measured sparsity of one model."""
    input:
        settings="results/{experiment}/settings.json",
        data="results/{experiment}/data.pt",
        checkpoint=f"{RUN}/{{model_dir}}/model.pt",
    output:
        f"{RUN}/{{model_dir}}/metrics.json",
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
    shell:
        "python -m sparse_soups evaluate --settings {input.settings} --data {input.data}"
        " --checkpoint {input.checkpoint} --threads {threads} --out {output} > {log} 2>&1"
