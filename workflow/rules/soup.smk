rule soup:
    """Merge a phase's m ingredients (uniform, the greedy subset on validation accuracy,
    or a merging operator; Model Stock, TIES and DARE also read the chain's model the
    phase started from) and recalibrate BatchNorm; the chain's next phase starts from
    here. `soup_at_end` averages the IMP chain's last-phase retrains, `uniform_k{k}` the
    first k of the uniform chain's (see layout.soup_recipe)."""
    input:
        **stage_inputs(soup_stage),
        base=soup_base,
        ingredients=soup_ingredients,
    output:
        update(layout.pattern("soup")),
    log:
        run_log("soup_{soup}_phase{phase}"),
    conda:
        ENV
    threads: RESOURCES["light"]["threads"]
    resources:
        **job_resources("light"),
    params:
        method=soup_method,
        base=lambda wildcards, input: f"--base {input.base}" if input.base else "",
    shell:
        "sparse-soups soup --settings {input.settings} --data {input.data}"
        " --method {params.method} --name {wildcards.soup} {params.base} --threads {threads}"
        " --out {output} {input.ingredients} > {log} 2>&1"


# The ensemble writes a metrics file with no model beside it, which `evaluate` cannot.
ruleorder: ensemble > evaluate


rule ensemble:
    """Test and validation accuracy of the mean-softmax ensemble of a phase's SMS
    ingredients, and its inference cost: a reference row, not a sparse model."""
    input:
        **stage_inputs("evaluate"),
        ingredients=ensemble_ingredients,
        ood=ood_input,
    output:
        update(layout.pattern("ensemble", layout.METRICS_FILE)),
    log:
        run_log("ensemble_phase{phase}"),
    conda:
        ENV
    threads: RESOURCES["light"]["threads"]
    resources:
        **job_resources("light"),
    params:
        ood=ood_option,
    shell:
        "sparse-soups ensemble --settings {input.settings} --data {input.data}"
        " {params.ood} --threads {threads} --out {output} {input.ingredients} > {log} 2>&1"


rule lottery_pools:
    """Lottery Pools aimed at one phase: interpolate its IMP ticket with the chain's other
    tickets (`interp`: alpha grid, `avg`: alpha 0.5), re-prune, recalibrate BatchNorm.
    """
    input:
        **stage_inputs("lottery_pools"),
        tickets=imp_tickets,
    output:
        update(layout.pattern("lottery_pools")),
    log:
        run_log("lottery_pools_{variant}_phase{phase}"),
    conda:
        ENV
    threads: RESOURCES["light"]["threads"]
    resources:
        **job_resources("light"),
    shell:
        "sparse-soups lottery-pools --settings {input.settings} --data {input.data}"
        " --phase {wildcards.phase} --variant {wildcards.variant} --threads {threads}"
        " --out {output} {input.tickets} > {log} 2>&1"
