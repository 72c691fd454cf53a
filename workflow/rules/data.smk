rule settings:
    """The validated settings of one experiment, with defaults filled in, as JSON, and a
    provenance record (code version, package versions, host) beside them.

    Every job reads its settings from here, so changing an experiment's config reruns
    that experiment's jobs and no others.
    """
    output:
        settings=update("results/{experiment}/settings.json"),
        provenance=update("results/{experiment}/provenance.json"),
    log:
        "results/{experiment}/logs/settings.log",
    localrule: True
    params:
        settings=lambda wildcards: settings_of(wildcards).to_dict(),  # reruns on change
    run:
        from sparse_soups.provenance import write_settings_and_provenance

        write_settings_and_provenance(
            settings_of(wildcards), output, BASEDIR or workflow.basedir
        )


rule stage_settings:
    """The keys of the settings one stage reads (stages.STAGES), as the input of that
    stage's jobs: a change reruns only the stages that read it."""
    output:
        update("results/{experiment}/settings/{stage}.json"),
    log:
        "results/{experiment}/logs/settings_{stage}.log",
    localrule: True
    params:
        settings=lambda wildcards: stage_settings(
            settings_of(wildcards), wildcards.stage
        ),
    run:
        write_stage_settings(params.settings, output[0], log[0])


rule prepare_data:
    """Find the raw files, hold out the validation split, save as one compact file."""
    input:
        settings="results/{experiment}/settings/data.json",
    output:
        update("results/{experiment}/data.pt"),
    log:
        experiment_log("prepare_data"),
    conda:
        ENV
    threads: RESOURCES["light"]["threads"]
    resources:
        **job_resources("light"),
    shell:
        "sparse-soups prepare-data --settings {input.settings} --threads {threads}"
        " --out {output} > {log} 2>&1"


rule corrupt_test_set:
    """The corrupted test set for OOD evaluation, once per experiment, in CIFAR-10-C's
    `.npy` layout: generated from the test split (seeded), or the official files subsampled.
    """
    input:
        **stage_inputs("ood"),
    output:
        directory("results/{experiment}/ood"),
    log:
        experiment_log("corrupt_test_set"),
    conda:
        ENV
    threads: RESOURCES["light"]["threads"]
    resources:
        **job_resources("light"),
    shell:
        "sparse-soups corrupt-test-set --settings {input.settings}"
        " --data {input.data} --threads {threads} --out {output} > {log} 2>&1"
