# Pruning during training: gradual magnitude pruning (GMP) aimed at an IMP phase's
# sparsity, and GMP + SMS (rounds of m copies, averaged and re-pruned). The library's
# gmp.py documents the exact adaptation; layout.py the directories.


wildcard_constraints:
    round=r"\d+",


rule gmp:
    """GMP from the dense model's initialization to one phase's sparsity (cubic schedule);
    also keeps its state when pruning starts, where GMP + SMS begins."""
    input:
        settings="results/{experiment}/settings.json",
        data="results/{experiment}/data.pt",
    output:
        model=update(f"{RUN}/gmp/phase{{phase}}/model.pt"),
        prefix=update(f"{RUN}/gmp/phase{{phase}}/dense_prefix/model.pt"),
    log:
        f"{RUN}/logs/gmp_phase{{phase}}.log",
    benchmark:
        f"{RUN}/benchmarks/gmp_phase{{phase}}.tsv"
    conda:
        ENV
    threads: RESOURCES["train"]["threads"]
    resources:
        mem_mb=RESOURCES["train"]["mem_mb"],
        runtime=lambda wildcards, attempt: RESOURCES["train"]["runtime"] * attempt,
        gpu=RESOURCES["train"]["gpu"],
    shell:
        "python -m sparse_soups gmp --settings {input.settings} --data {input.data}"
        " --phase {wildcards.phase} --seed {wildcards.seed} --threads {threads}"
        " --out {output.model} --prefix-out {output.prefix} > {log} 2>&1"


rule gmp_sms_ingredient:
    """One copy of a GMP + SMS round: GMP's schedules continued from the round's start."""
    input:
        settings="results/{experiment}/settings.json",
        data="results/{experiment}/data.pt",
        parent=gmp_sms_parent,
    output:
        update(
            f"{RUN}/gmp_sms/phase{{phase}}/round{{round}}/ingredient{{index}}/model.pt"
        ),
    log:
        f"{RUN}/logs/gmp_sms_phase{{phase}}_round{{round}}_ingredient{{index}}.log",
    benchmark:
        f"{RUN}/benchmarks/gmp_sms_phase{{phase}}_round{{round}}_ingredient{{index}}.tsv"
    conda:
        ENV
    threads: RESOURCES["train"]["threads"]
    resources:
        mem_mb=RESOURCES["train"]["mem_mb"],
        runtime=lambda wildcards, attempt: RESOURCES["train"]["runtime"] * attempt,
        gpu=RESOURCES["train"]["gpu"],
    shell:
        "python -m sparse_soups gmp-sms-ingredient --settings {input.settings}"
        " --data {input.data} --parent {input.parent} --phase {wildcards.phase}"
        " --round {wildcards.round} --index {wildcards.index} --seed {wildcards.seed}"
        " --threads {threads} --out {output} > {log} 2>&1"


rule gmp_sms_round:
    """Average a round's copies, re-prune to the schedule's sparsity, recalibrate
    BatchNorm: the next round starts here (rounds before the last)."""
    input:
        settings="results/{experiment}/settings.json",
        data="results/{experiment}/data.pt",
        ingredients=gmp_sms_copies,
    output:
        update(f"{RUN}/gmp_sms/phase{{phase}}/round{{round}}/soup/model.pt"),
    log:
        f"{RUN}/logs/gmp_sms_phase{{phase}}_round{{round}}_soup.log",
    benchmark:
        f"{RUN}/benchmarks/gmp_sms_phase{{phase}}_round{{round}}_soup.tsv"
    conda:
        ENV
    threads: RESOURCES["light"]["threads"]
    resources:
        mem_mb=RESOURCES["light"]["mem_mb"],
        runtime=lambda wildcards, attempt: RESOURCES["light"]["runtime"] * attempt,
        gpu=RESOURCES["light"]["gpu"],
    shell:
        "python -m sparse_soups gmp-sms-average --settings {input.settings}"
        " --data {input.data} --phase {wildcards.phase} --round {wildcards.round}"
        " --threads {threads} --out {output} {input.ingredients} > {log} 2>&1"


rule gmp_sms:
    """The last round's average: GMP + SMS's model for one phase's sparsity."""
    input:
        settings="results/{experiment}/settings.json",
        data="results/{experiment}/data.pt",
        ingredients=gmp_sms_last_copies,
    output:
        update(f"{RUN}/gmp_sms/phase{{phase}}/model.pt"),
    log:
        f"{RUN}/logs/gmp_sms_phase{{phase}}.log",
    benchmark:
        f"{RUN}/benchmarks/gmp_sms_phase{{phase}}.tsv"
    conda:
        ENV
    threads: RESOURCES["light"]["threads"]
    resources:
        mem_mb=RESOURCES["light"]["mem_mb"],
        runtime=lambda wildcards, attempt: RESOURCES["light"]["runtime"] * attempt,
        gpu=RESOURCES["light"]["gpu"],
    params:
        round=gmp_rounds_of,
    shell:
        "python -m sparse_soups gmp-sms-average --settings {input.settings}"
        " --data {input.data} --phase {wildcards.phase} --round {params.round}"
        " --threads {threads} --out {output} {input.ingredients} > {log} 2>&1"
