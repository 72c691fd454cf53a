"""How long Snakemake takes to build the DAG of a large study, and how much memory.

Why: every `snakemake` call (a run, a restart, a dry run) first resolves the whole DAG
through the input functions in workflow/rules/common.smk. A study of many experiments
and seeds must not spend minutes or gigabytes before its first job. This times
`snakemake -n` (wall clock, maximum resident set size via /usr/bin/time -v) on:

- the default config (62 jobs);
- a generated config of copies of the default experiment with enough seeds for about
  `--target` jobs (5,000), the count read from the dry run's job-stats `total` line.

    python benchmarks/dag_scale.py [--target 5000] [--repeats 3] [--quick]
"""

from __future__ import annotations

import argparse
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common
import yaml

TIME = shutil.which("time") or "/usr/bin/time"
TOTAL = re.compile(r"^total\s+(\d+)\s*$", re.MULTILINE)
MAX_RSS = re.compile(r"Maximum resident set size \(kbytes\): (\d+)")


def study(experiments: int, seeds: int) -> dict[str, Any]:
    """`experiments` copies of the default experiment, each with seeds 0 .. seeds - 1."""
    config = yaml.safe_load((_common.REPO / "config" / "config.yaml").read_text())
    (default,) = config["experiments"].values()
    config["experiments"] = {
        f"study{e}": {**default, "seeds": list(range(seeds))} for e in range(experiments)
    }
    return config


def dry_run(config: dict[str, Any]) -> dict[str, Any]:
    """One `snakemake -n` in a fresh directory: job count, wall seconds, peak RSS in MiB."""
    with tempfile.TemporaryDirectory() as workdir:
        configfile = Path(workdir) / "config.yaml"
        configfile.write_text(yaml.safe_dump(config))
        command = [
            sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--quiet", "rules",
            "--snakefile", str(_common.REPO / "Snakefile"), "--configfile", str(configfile), "-d", workdir,
        ]  # fmt: skip
        use_time = Path(TIME).exists()
        start = time.perf_counter()
        done = subprocess.run(
            [TIME, "-v", *command] if use_time else command, capture_output=True, text=True, check=True
        )
        wall = time.perf_counter() - start
    output = done.stdout + done.stderr
    if use_time:
        rss_kib = int(MAX_RSS.search(done.stderr).group(1))
    else:  # Linux reports KiB; the largest child so far, an upper bound
        rss_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"jobs": int(TOTAL.findall(output)[-1]), "wall_s": wall, "max_rss_mib": rss_kib / 1024}


def seeds_for(target: int, experiments: int) -> int:
    """Solve jobs = 1 + experiments * (fixed + per_seed * seeds) from two small dry runs."""
    one, two = dry_run(study(1, 1))["jobs"], dry_run(study(1, 2))["jobs"]
    per_seed, fixed = two - one, one - 1 - (two - one)
    return max(1, round(((target - 1) / experiments - fixed) / per_seed))


def measure(config: dict[str, Any], repeats: int) -> dict[str, Any]:
    runs = [dry_run(config) for _ in range(repeats)]
    wall = [r["wall_s"] for r in runs]
    return {
        "jobs": runs[0]["jobs"],
        "wall_s": _common.stats(wall, 3),
        "max_rss_mib": round(statistics.median(r["max_rss_mib"] for r in runs), 1),
        "ms_per_job": round(1000 * statistics.median(wall) / runs[0]["jobs"], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", type=int, default=5000, help="jobs in the generated study")
    parser.add_argument("--experiments", type=int, default=2, help="copies of the default experiment")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="about 1,000 jobs, 1 repeat")
    args = parser.parse_args()
    if args.quick:
        args.target, args.repeats = 1000, 1

    seeds = seeds_for(args.target, args.experiments)
    default = measure(study(1, 1), args.repeats)
    large = measure(study(args.experiments, seeds), args.repeats)
    payload = {
        "benchmark": "dag_scale",
        "machine": _common.machine(),
        "method": f"snakemake -n --quiet rules in a fresh -d directory, median of {args.repeats}; wall "
        "clock around the process; max RSS from /usr/bin/time -v; jobs from the job-stats total line",
        "default_config": default,
        "generated_study": {"experiments": args.experiments, "seeds_each": seeds, **large},
    }
    _common.write_result("dag_scale", payload, args.quick)
    for name, r in (("default", default), ("generated", large)):
        print(f"{name}: {r['jobs']} jobs, {r['wall_s']['median']} s, {r['max_rss_mib']} MiB max RSS")


if __name__ == "__main__":
    main()
