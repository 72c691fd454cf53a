"""Time the default workflow end to end and split its time by rule.

    python benchmarks/default_run.py            # reruns everything: about 25 minutes on 2 cores
    python benchmarks/default_run.py --no-run   # only summarize the last run

Writes benchmarks/results/default_run.json with the run's wall time, the per-rule
totals from Snakemake's `benchmark:` files, and how long a training job takes to load
the prepared dataset.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import time
from pathlib import Path

import pandas as pd

from sparse_soups.config import Settings
from sparse_soups.kernels.data import load_prepared

REPO = Path(__file__).resolve().parents[1]
# Benchmark files are named after their rule (`evaluate/` is a directory); GMP + SMS's
# three rules share a prefix, so they are told apart by what follows the phase.
RULE = re.compile(
    r"^(prepare_data|corrupt_test_set|pretrain|rewind_point|imp_rewind|retrain|soup|ensemble"
    r"|lottery_pools|gmp_sms_phase\d+_round\d+_ingredient|gmp_sms_phase\d+_round\d+_soup"
    r"|gmp_sms|gmp|evaluate)"
)


def run_workflow(cores: int) -> float:
    start = time.perf_counter()
    subprocess.run(["snakemake", "--cores", str(cores), "--forceall", "--quiet"], cwd=REPO, check=True)
    return time.perf_counter() - start


def rule_times(experiment_dir: Path) -> pd.DataFrame:
    rows = []
    for path in experiment_dir.rglob("benchmarks/**/*.tsv"):
        relative = path.relative_to(next(p for p in path.parents if p.name == "benchmarks"))
        match = RULE.match(str(relative))
        rule = match.group(1) if match else "evaluate"
        if rule.startswith("gmp_sms_phase"):
            rule = "gmp_sms_ingredient" if rule.endswith("ingredient") else "gmp_sms_round"
        frame = pd.read_csv(path, sep="\t")
        rows.append({"rule": rule, "wall_s": frame.s.iloc[-1], "cpu_s": frame.cpu_time.iloc[-1]})
    table = (
        pd.DataFrame(rows)
        .groupby("rule")
        .agg(jobs=("wall_s", "size"), wall_s=("wall_s", "sum"), cpu_s=("cpu_s", "sum"))
    )
    return table.round(1)


def data_load_seconds(experiment_dir: Path, repeats: int = 5) -> float:
    settings = Settings.from_json(experiment_dir / "settings.json")
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        load_prepared(experiment_dir / "data.pt", settings.data)
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-run", action="store_true", help="summarize the existing results")
    parser.add_argument("--cores", type=int, default=8)
    parser.add_argument("--experiment", default="fmnist_cnn")
    args = parser.parse_args()
    wall = None if args.no_run else run_workflow(args.cores)
    experiment_dir = REPO / "results" / args.experiment
    by_rule = rule_times(experiment_dir)
    summary = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "snakemake_cores": args.cores,
        "wall_seconds": None if wall is None else round(wall, 1),
        "data_load_seconds": round(data_load_seconds(experiment_dir), 3),
        "by_rule": by_rule.reset_index().to_dict(orient="records"),
    }
    out = REPO / "benchmarks" / "results" / "default_run.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(by_rule.to_string())
    print(json.dumps({k: v for k, v in summary.items() if k != "by_rule"}, indent=2))


if __name__ == "__main__":
    main()
