rule soup:
    """Average a phase's m ingredients (uniform, or the greedy subset on validation
    accuracy) and recalibrate BatchNorm; the chain's next phase starts from here.
    `soup_at_end` averages the IMP chain's last-phase retrains, `uniform_k{k}` the first
    k of the uniform chain's (see layout.soup_recipe)."""
    input:
        settings="results/{experiment}/settings.json",
        data="results/{experiment}/data.pt",
        ingredients=soup_ingredients,
    output:
        update(f"{RUN}/{{soup}}/phase{{phase}}/soup/model.pt"),
    log:
        f"{RUN}/logs/soup_{{soup}}_phase{{phase}}.log",
    benchmark:
        f"{RUN}/benchmarks/soup_{{soup}}_phase{{phase}}.tsv"
    conda:
        ENV
    threads: RESOURCES["light"]["threads"]
    resources:
        mem_mb=RESOURCES["light"]["mem_mb"],
        runtime=lambda wildcards, attempt: RESOURCES["light"]["runtime"] * attempt,
        gpu=RESOURCES["light"]["gpu"],
    params:
        method=soup_method,
    shell:
        "python -m sparse_soups soup --settings {input.settings} --data {input.data}"
        " --method {params.method} --name {wildcards.soup} --threads {threads}"
        " --out {output} {input.ingredients} > {log} 2>&1"


# The ensemble writes a metrics file with no model beside it, which `evaluate` cannot.
ruleorder: ensemble > evaluate


rule ensemble:
    """Test and validation accuracy of the mean-softmax ensemble of a phase's SMS
    ingredients, and its inference cost: a reference row, not a sparse model."""
    input:
        settings="results/{experiment}/settings.json",
        data="results/{experiment}/data.pt",
        ingredients=ensemble_ingredients,
        ood=ood_input,
    output:
        update(f"{RUN}/ensemble/phase{{phase}}/metrics.json"),
    log:
        f"{RUN}/logs/ensemble_phase{{phase}}.log",
    benchmark:
        f"{RUN}/benchmarks/ensemble_phase{{phase}}.tsv"
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
        "python -m sparse_soups ensemble --settings {input.settings} --data {input.data}"
        " {params.ood} --threads {threads} --out {output} {input.ingredients} > {log} 2>&1"


rule lottery_pools:
    """Lottery Pools aimed at one phase: interpolate its IMP ticket with the chain's other
    tickets (`interp`: alpha grid, `avg`: alpha 0.5), re-prune, recalibrate BatchNorm.
    """
    input:
        settings="results/{experiment}/settings.json",
        data="results/{experiment}/data.pt",
        tickets=imp_tickets,
    output:
        update(f"{RUN}/lottery_pools_{{variant}}/phase{{phase}}/model.pt"),
    log:
        f"{RUN}/logs/lottery_pools_{{variant}}_phase{{phase}}.log",
    benchmark:
        f"{RUN}/benchmarks/lottery_pools_{{variant}}_phase{{phase}}.tsv"
    conda:
        ENV
    threads: RESOURCES["light"]["threads"]
    resources:
        mem_mb=RESOURCES["light"]["mem_mb"],
        runtime=lambda wildcards, attempt: RESOURCES["light"]["runtime"] * attempt,
        gpu=RESOURCES["light"]["gpu"],
    shell:
        "python -m sparse_soups lottery-pools --settings {input.settings} --data {input.data}"
        " --phase {wildcards.phase} --variant {wildcards.variant} --threads {threads}"
        " --out {output} {input.tickets} > {log} 2>&1"
