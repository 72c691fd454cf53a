"""Run every benchmark and summarize them: `python benchmarks/run_all.py`.

Why: one command that regenerates every number quoted about this package's speed.
Each benchmark runs in its own process (thread settings and imports cannot leak from
one into the next) and writes benchmarks/results/{name}.json; this script then writes
benchmarks/results/summary.json with the headline numbers and prints them.

    python benchmarks/run_all.py                      # about 10 minutes on 2 CPU cores
    python benchmarks/run_all.py --quick              # smoke pass, into benchmarks/results/quick/
    python benchmarks/run_all.py --with-default-run   # first rerun the whole default workflow (~10 min)
    python benchmarks/run_all.py --device cuda        # the device for training and soups
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import _common

BENCHMARKS = (
    "training_throughput", "job_overhead", "dag_scale", "soup_costs", "checkpoint_sizes",
    "imagenet_streaming",
)  # fmt: skip
ON_DEVICE = {"training_throughput", "soup_costs"}  # take --device


def run(name: str, extra: list[str]) -> dict[str, Any]:
    print(f"== {name} {' '.join(extra)}", flush=True)
    start = time.perf_counter()
    script = Path(__file__).with_name(f"{name}.py")
    returncode = subprocess.run([sys.executable, str(script), *extra], cwd=_common.REPO).returncode
    return {"returncode": returncode, "seconds": round(time.perf_counter() - start, 1)}


def headline(name: str, result: dict[str, Any]) -> dict[str, Any]:
    """The numbers worth quoting from one benchmark's JSON."""
    if name == "training_throughput":
        return {
            threads: {
                "images_per_s": {k: v["median"] for k, v in r["images_per_s"].items()},
                "ratio_package_to_minimal": r["ratio_package_to_minimal"],
                "speedup_in_memory_over_dataloader": r["speedup_in_memory_over_dataloader"],
                "fraction_of_peak_matmul": r["fraction_of_peak"],
                "peak_matmul_flops_per_s": r["peak_matmul"]["best_flops_per_s"],
            }
            for threads, r in result["by_threads"].items()
        }
    if name == "job_overhead":
        return {
            "process_start_and_imports_s": result["process_start_s"]["import_sparse_soups_jobs"]["median"],
            "load_prepared_s": result["load_prepared_s"]["median"],
            "checkpoint_load_s": result["checkpoint_load_s"]["sparse90"]["median"],
            "share_of_mean_job": {
                rule: {"wall": r["share_of_mean_wall"], "cpu": r["share_of_mean_cpu"]}
                for rule, r in result["by_rule"].items()
            },
        }
    if name == "dag_scale":
        return {
            key: {"jobs": r["jobs"], "wall_s": r["wall_s"]["median"], "max_rss_mib": r["max_rss_mib"]}
            for key, r in (("default", result["default_config"]), ("generated", result["generated_study"]))
        }
    if name == "soup_costs":
        return {
            "seconds": {k: v["median"] for k, v in result["seconds"].items()},
            "relative_to_one_retrain": result["relative_to_one_retrain"],
            "lottery_pools": result["lottery_pools"],
        }
    if name == "checkpoint_sizes":
        return {
            f"{row['sparsity']:.1%} sparse": {
                "bytes": row["package_bytes"],
                "of_naive": row["package_over_naive"],
            }
            for row in result["by_phase"]
        }
    if name == "imagenet_streaming":
        return {
            workers: {key: value if isinstance(value, float) else value["median"] for key, value in r.items()}
            for workers, r in result["images_per_s"].items()
        }
    if name == "default_run":
        keys = ("command", "wall_seconds", "run_cpu_seconds", "overhead_share", "machine")
        return {key: result.get(key) for key in keys}
    return {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short smoke pass of every benchmark")
    parser.add_argument("--with-default-run", action="store_true", help="rerun the default workflow first")
    parser.add_argument("--device", default="auto", help="for training_throughput and soup_costs")
    args = parser.parse_args()
    out_dir = _common.results_dir(args.quick)

    runs: dict[str, dict[str, Any]] = {}
    if args.with_default_run:  # first: the other benchmarks then read its fresh outputs
        runs["default_run"] = run("default_run", [])
    for name in BENCHMARKS:
        extra = (["--quick"] if args.quick else []) + (["--device", args.device] if name in ON_DEVICE else [])
        runs[name] = run(name, extra)

    summary: dict[str, Any] = {"quick": args.quick, "runs": runs, "results": {}}
    for name in ["default_run", *BENCHMARKS]:
        path = (_common.RESULTS if name == "default_run" else out_dir) / f"{name}.json"
        if path.exists() and runs.get(name, {}).get("returncode", 0) == 0:
            summary["results"][name] = headline(name, json.loads(path.read_text()))
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")

    print(f"\n== summary ({(out_dir / 'summary.json').relative_to(_common.REPO)})")
    for name, numbers in summary["results"].items():
        print(f"{name}:\n{json.dumps(numbers, indent=2)}")
    failed = [name for name, r in runs.items() if r["returncode"] != 0]
    if failed:
        print(f"FAILED: {', '.join(failed)}")
        sys.exit(1)


if __name__ == "__main__":
    main()
