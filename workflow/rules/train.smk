rule pretrain:
    """Train the dense model of one seed."""
    input:
        settings="results/{experiment}/settings.json",
        data="results/{experiment}/data.pt",
    output:
        update(f"{RUN}/dense/model.pt"),
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
        update(f"{RUN}/{{lineage}}/phase{{phase}}/ingredient{{index}}/model.pt"),
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


rule rewind_point:
    """The dense run's state at the end of `baselines.rewind_epoch`, by replaying its first
    epochs on pretraining's threads (bitwise that run's state; `pretrain` is untouched).
    """
    input:
        settings="results/{experiment}/settings.json",
        data="results/{experiment}/data.pt",
    output:
        update(f"{RUN}/rewind/model.pt"),
    log:
        f"{RUN}/logs/rewind_point.log",
    benchmark:
        f"{RUN}/benchmarks/rewind_point.tsv"
    conda:
        ENV
    threads: RESOURCES["pretrain"]["threads"]
    resources:
        mem_mb=RESOURCES["pretrain"]["mem_mb"],
        runtime=lambda wildcards, attempt: RESOURCES["pretrain"]["runtime"] * attempt,
        gpu=RESOURCES["pretrain"]["gpu"],
    shell:
        "python -m sparse_soups rewind-point --settings {input.settings} --data {input.data}"
        " --seed {wildcards.seed} --threads {threads} --out {output} > {log} 2>&1"


rule imp_rewind:
    """IMP with weight rewinding: prune the chain's previous model, reset the survivors to
    the rewind point, train the rest of pretraining's schedule."""
    input:
        settings="results/{experiment}/settings.json",
        data="results/{experiment}/data.pt",
        parent=lambda wildcards: run_path(
            wildcards,
            layout.chain_model_dir(layout.IMP_REWIND, int(wildcards.phase) - 1),
        ),
        rewind=f"{RUN}/rewind/model.pt",
    output:
        update(f"{RUN}/imp_rewind/phase{{phase}}/ingredient0/model.pt"),
    log:
        f"{RUN}/logs/imp_rewind_phase{{phase}}.log",
    benchmark:
        f"{RUN}/benchmarks/imp_rewind_phase{{phase}}.tsv"
    conda:
        ENV
    threads: RESOURCES["train"]["threads"]
    resources:
        mem_mb=RESOURCES["train"]["mem_mb"],
        runtime=lambda wildcards, attempt: RESOURCES["train"]["runtime"] * attempt,
        gpu=RESOURCES["train"]["gpu"],
    shell:
        "python -m sparse_soups imp-rewind --settings {input.settings} --data {input.data}"
        " --parent {input.parent} --rewind {input.rewind} --phase {wildcards.phase}"
        " --seed {wildcards.seed} --threads {threads} --out {output} > {log} 2>&1"
