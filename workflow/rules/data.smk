rule settings:
    """The validated settings of one experiment, with defaults filled in, as JSON, and a
    provenance record (code version, package versions, host) beside them.

    Every job reads its settings from here, so changing an experiment's config reruns
    that experiment's jobs and no others.
    """
    output:
        settings="results/{experiment}/settings.json",
        provenance="results/{experiment}/provenance.json",
    log:
        "results/{experiment}/logs/settings.log",
    localrule: True
    params:
        settings=lambda wildcards: settings_of(wildcards).to_dict(),  # reruns on change
    run:
        from sparse_soups.provenance import write_settings_and_provenance

        write_settings_and_provenance(
            settings_of(wildcards), output, workflow.basedir
        )


rule prepare_data:
    """Find the raw files, hold out the validation split, save as one compact file."""
    input:
        settings="results/{experiment}/settings.json",
    output:
        "results/{experiment}/data.pt",
    log:
        "results/{experiment}/logs/prepare_data.log",
    benchmark:
        "results/{experiment}/benchmarks/prepare_data.tsv"
    conda:
        ENV
    threads: RESOURCES["light"]["threads"]
    resources:
        mem_mb=RESOURCES["light"]["mem_mb"],
        runtime=lambda wildcards, attempt: RESOURCES["light"]["runtime"] * attempt,
        gpu=RESOURCES["light"]["gpu"],
    shell:
        "python -m sparse_soups prepare-data --settings {input.settings} --threads {threads}"
        " --out {output} > {log} 2>&1"
