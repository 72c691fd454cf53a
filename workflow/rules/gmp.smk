# Pruning during training: gradual magnitude pruning (GMP) aimed at an IMP phase's
# sparsity, and GMP + SMS (rounds of m copies, averaged and re-pruned). The library's
# kernels/gradual.py documents the exact adaptation; layout.py the directories.


rule gmp:
    """GMP from the dense model's initialization to one phase's sparsity (cubic schedule);
    also keeps its state when pruning starts, where GMP + SMS begins."""
    input:
        **training_inputs("gmp"),
    output:
        model=update(layout.pattern("gmp")),
        history=update(layout.pattern("gmp", file=layout.HISTORY_FILE)),
        prefix=update(layout.pattern("gmp_prefix")),
    log:
        run_log("gmp_phase{phase}"),
    conda:
        ENV
    threads: RESOURCES["train"]["threads"]
    resources:
        **job_resources("train"),
    shell:
        "sparse-soups gmp --settings {input.settings} --data {input.data}"
        " --phase {wildcards.phase} --seed {wildcards.seed} --threads {threads}"
        " --out {output.model} --prefix-out {output.prefix} --logging {input.logging} > {log} 2>&1"


rule gmp_sms_ingredient:
    """One copy of a GMP + SMS round: GMP's schedules continued from the round's start."""
    input:
        **training_inputs("gmp"),
        parent=gmp_sms_parent,
    output:
        model=update(layout.pattern("gmp_sms_ingredient")),
        history=update(layout.pattern("gmp_sms_ingredient", file=layout.HISTORY_FILE)),
    log:
        run_log("gmp_sms_phase{phase}_round{round}_ingredient{index}"),
    conda:
        ENV
    threads: RESOURCES["train"]["threads"]
    resources:
        **job_resources("train"),
    shell:
        "sparse-soups gmp-sms-ingredient --settings {input.settings}"
        " --data {input.data} --parent {input.parent} --phase {wildcards.phase}"
        " --round {wildcards.round} --index {wildcards.index} --seed {wildcards.seed}"
        " --threads {threads} --out {output.model} --logging {input.logging} > {log} 2>&1"


rule gmp_sms_round:
    """Average a round's copies, re-prune to the schedule's sparsity, recalibrate
    BatchNorm: the next round starts here (rounds before the last)."""
    input:
        **stage_inputs("gmp"),
        ingredients=gmp_sms_copies,
    output:
        update(layout.pattern("gmp_sms_round")),
    log:
        run_log("gmp_sms_phase{phase}_round{round}_soup"),
    conda:
        ENV
    threads: RESOURCES["light"]["threads"]
    resources:
        **job_resources("light"),
    shell:
        "sparse-soups gmp-sms-average --settings {input.settings}"
        " --data {input.data} --phase {wildcards.phase} --round {wildcards.round}"
        " --threads {threads} --out {output} {input.ingredients} > {log} 2>&1"


rule gmp_sms:
    """The last round's average: GMP + SMS's model for one phase's sparsity."""
    input:
        **stage_inputs("gmp"),
        ingredients=gmp_sms_last_copies,
    output:
        update(layout.pattern("gmp_sms")),
    log:
        run_log("gmp_sms_phase{phase}"),
    conda:
        ENV
    threads: RESOURCES["light"]["threads"]
    resources:
        **job_resources("light"),
    params:
        round=gmp_rounds_of,
    shell:
        "sparse-soups gmp-sms-average --settings {input.settings}"
        " --data {input.data} --phase {wildcards.phase} --round {params.round}"
        " --threads {threads} --out {output} {input.ingredients} > {log} 2>&1"
