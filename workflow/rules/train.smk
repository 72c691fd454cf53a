rule pretrain:
    """Train the dense model of one seed."""
    input:
        settings="results/{experiment}/settings.json",
        data="results/{experiment}/data.pt",
    output:
        f"{RUN}/dense/model.pt",
    log:
        f"{RUN}/logs/pretrain.log",
    benchmark:
        f"{RUN}/benchmarks/pretrain.tsv"
    conda:
        ENV
    threads: RESOURCES["pretrain"]["threads"]
    resources:
        mem_mb=RESOURCES["pretrain"]["mem_mb"],
        runtime=lambda wildcards, attempt: RESOURCES["pretrain"]["runtime"] * attempt,
        gpu=RESOURCES["pretrain"]["gpu"],
    shell:
        "python -m sparse_soups pretrain --settings {input.settings} --data {input.data}"
        " --seed {wildcards.seed} --threads {threads} --out {output} > {log} 2>&1"


rule retrain:
    """Prune the chain's previous model to this phase's sparsity and retrain one ingredient.

    `lineage` is the chain (imp, uniform, greedy) whose previous phase this starts from;
    phase 1 starts from the dense model for every chain, so its lineage is `dense`.
    """
    input:
        settings="results/{experiment}/settings.json",
        data="results/{experiment}/data.pt",
        parent=retrain_parent,
    output:
        f"{RUN}/{{lineage}}/phase{{phase}}/ingredient{{index}}/model.pt",
    log:
        f"{RUN}/logs/retrain_{{lineage}}_phase{{phase}}_ingredient{{index}}.log",
    benchmark:
        f"{RUN}/benchmarks/retrain_{{lineage}}_phase{{phase}}_ingredient{{index}}.tsv"
    conda:
        ENV
    threads: RESOURCES["train"]["threads"]
    resources:
        mem_mb=RESOURCES["train"]["mem_mb"],
        runtime=lambda wildcards, attempt: RESOURCES["train"]["runtime"] * attempt,
        gpu=RESOURCES["train"]["gpu"],
    shell:
        "python -m sparse_soups retrain --settings {input.settings} --data {input.data}"
        " --parent {input.parent} --lineage {wildcards.lineage} --phase {wildcards.phase}"
        " --index {wildcards.index} --seed {wildcards.seed} --threads {threads}"
        " --out {output} > {log} 2>&1"
