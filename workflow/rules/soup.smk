rule soup:
    """Average a phase's m ingredients (uniform, or the greedy subset on validation
    accuracy) and recalibrate BatchNorm; the chain's next phase starts from here."""
    input:
        settings="results/{experiment}/settings.json",
        data="results/{experiment}/data.pt",
        ingredients=soup_ingredients,
    output:
        f"{RUN}/{{method}}/phase{{phase}}/soup/model.pt",
    log:
        f"{RUN}/logs/soup_{{method}}_phase{{phase}}.log",
    benchmark:
        f"{RUN}/benchmarks/soup_{{method}}_phase{{phase}}.tsv"
    conda:
        ENV
    threads: RESOURCES["light"]["threads"]
    resources:
        mem_mb=RESOURCES["light"]["mem_mb"],
        runtime=lambda wildcards, attempt: RESOURCES["light"]["runtime"] * attempt,
        gpu=RESOURCES["light"]["gpu"],
    shell:
        "python -m sparse_soups soup --settings {input.settings} --data {input.data}"
        " --method {wildcards.method} --threads {threads} --out {output}"
        " {input.ingredients} > {log} 2>&1"
