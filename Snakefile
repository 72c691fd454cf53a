# Sparse Model Soups: pretraining, IMP phases with m retrained ingredients each, soups,
# baselines, evaluation and report. `snakemake --cores 8` runs config/config.yaml;
# rules, schema and report captions live in workflow/, the library in src/sparse_soups.
import os
import shlex
import sys

from snakemake.utils import min_version

min_version("9.0")

# This checkout: the directory of this file, not `workflow.basedir`, which is the
# deploying workflow's when another one uses this as a module (README, "Deploying").
# None when Snakemake reads the files from a repository host (snakedeploy's github()).
_HERE = workflow.current_basedir
BASEDIR = os.fspath(_HERE) if isinstance(_HERE, os.PathLike) else None
# Jobs run the library of this checkout, installed or not (a conda environment made
# from envs/ holds only its dependencies); read remotely, the installed package.
SRC = os.path.join(BASEDIR, "src") if BASEDIR else None
JOB_PREFIX = ""
if SRC:
    sys.path.insert(0, SRC)
    # `sparse-soups` in a job is the warm worker's thin client (src/sparse_soups/client.py),
    # started without site-packages; with no worker to use (a cluster job, `warm_start:
    # false`) it runs `python -m sparse_soups`, the command of the same name.
    CLIENT = shlex.quote(os.path.join(SRC, "sparse_soups", "client.py"))
    JOB_PREFIX = (
        f'export PYTHONPATH="{SRC}${{{{PYTHONPATH:+:$PYTHONPATH}}}}"; '
        f'sparse-soups() {{{{ python -I -S {CLIENT} "$@"; }}}}; '
    )
shell.prefix(JOB_PREFIX)

# The embedded default, unless --configfile names another: a config file given on the
# command line replaces it instead of being merged into it.
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/soup.smk"
include: "workflow/rules/gmp.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        all_reports(),
        all_results(),
