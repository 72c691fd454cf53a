rule pretrain:
    """Train the dense model of one seed."""
    input:
        **training_inputs("pretrain"),
    output:
        model=update(layout.pattern("dense")),
        history=update(layout.pattern("dense", file=layout.HISTORY_FILE)),
    log:
        run_log("pretrain"),
    conda:
        ENV
    threads: RESOURCES["pretrain"]["threads"]
    resources:
        **job_resources("pretrain"),
    shell:
        "sparse-soups pretrain --settings {input.settings} --data {input.data}"
        " --seed {wildcards.seed} --threads {threads} --out {output.model} --logging {input.logging} > {log} 2>&1"


rule retrain:
    """Prune the chain's previous model to this phase's sparsity and retrain one ingredient.

    `lineage` is the chain (imp, uniform, greedy, ...) whose previous phase this starts
    from; phase 1 starts from the dense model for every chain, so its lineage is `dense`
    (swamp's retrains average their late weights, so they are its own in phase 1 too).
    """
    input:
        **training_inputs(retrain_stage),
        parent=retrain_parent,
    output:
        model=update(layout.pattern("ingredient")),
        history=update(layout.pattern("ingredient", file=layout.HISTORY_FILE)),
    log:
        run_log("retrain_{lineage}_phase{phase}_ingredient{index}"),
    conda:
        ENV
    threads: RESOURCES["train"]["threads"]
    resources:
        **job_resources("train"),
    shell:
        "sparse-soups retrain --settings {input.settings} --data {input.data}"
        " --parent {input.parent} --lineage {wildcards.lineage} --phase {wildcards.phase}"
        " --index {wildcards.index} --seed {wildcards.seed} --threads {threads}"
        " --out {output.model} --logging {input.logging} > {log} 2>&1"


rule rewind_point:
    """The dense run's state at the end of `baselines.rewind_epoch`, by replaying its first
    epochs on pretraining's threads (bitwise that run's state; `pretrain` is untouched).
    """
    input:
        **training_inputs("rewind"),
    output:
        model=update(layout.pattern("rewind")),
        history=update(layout.pattern("rewind", file=layout.HISTORY_FILE)),
    log:
        run_log("rewind_point"),
    conda:
        ENV
    threads: RESOURCES["pretrain"]["threads"]
    resources:
        **job_resources("pretrain"),
    shell:
        "sparse-soups rewind-point --settings {input.settings} --data {input.data}"
        " --seed {wildcards.seed} --threads {threads} --out {output.model} --logging {input.logging} > {log} 2>&1"


rule imp_rewind:
    """IMP with weight rewinding: prune the chain's previous model, reset the survivors to
    the rewind point, train the rest of pretraining's schedule."""
    input:
        **training_inputs("rewind"),
        parent=lambda wildcards: run_path(
            wildcards,
            layout.chain_model_dir(layout.IMP_REWIND, int(wildcards.phase) - 1),
        ),
        rewind=layout.pattern("rewind"),
    output:
        model=update(layout.pattern("ingredient", lineage=layout.IMP_REWIND, index=0)),
        history=update(
            layout.pattern(
                "ingredient",
                lineage=layout.IMP_REWIND,
                index=0,
                file=layout.HISTORY_FILE,
            )
        ),
    log:
        run_log("imp_rewind_phase{phase}"),
    conda:
        ENV
    threads: RESOURCES["train"]["threads"]
    resources:
        **job_resources("train"),
    shell:
        "sparse-soups imp-rewind --settings {input.settings} --data {input.data}"
        " --parent {input.parent} --rewind {input.rewind} --phase {wildcards.phase}"
        " --seed {wildcards.seed} --threads {threads} --out {output.model} --logging {input.logging} > {log} 2>&1"
