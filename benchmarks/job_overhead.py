"""Fixed cost of one workflow job, and its share of each rule's job time.

Why: the workflow runs every step as its own process (62 jobs in the default run), so
each job pays for starting Python, importing torch and the package, loading the
prepared dataset and its input checkpoints before doing any work. This measures those
costs and divides them by the mean CPU time of each rule's jobs in the default run
(the CPU line each job logs, parsed by `default_run.job_cpu`). In a local run the warm
worker (worker.py) pays the imports once: a job then starts as `import sparse_soups.worker`
(`warm_client` below) plus the loads.

    python benchmarks/job_overhead.py [--repeats 7] [--quick]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from functools import partial
from pathlib import Path
from typing import Any

import _common
from default_run import job_cpu

from sparse_soups.config import Settings
from sparse_soups.kernels.checkpoints import Checkpoint
from sparse_soups.kernels.data import load_prepared
from sparse_soups.kernels.training import make_reproducible

CHECKPOINTS = {"dense": "seed0/dense/model.pt", "sparse90": "seed0/uniform/phase3/ingredient0/model.pt"}
STARTUP = {
    "python": "pass",
    "import_torch": "import torch",
    "import_sparse_soups_jobs": "import sparse_soups.jobs",
    "warm_client": "import sparse_soups.worker",
}


def process_seconds(code: str, repeats: int) -> dict[str, Any]:
    """Wall time of a fresh `python -c CODE`: interpreter start plus imports."""
    return _common.repeat(partial(subprocess.run, [sys.executable, "-c", code], check=True), repeats)


def checkpoints_read(rule: str, ingredients: int) -> int:
    """Checkpoints a job of `rule` loads: its parent, the model it evaluates, or the m ingredients."""
    return {"pretrain": 0, "retrain": 1, "evaluate": 1, "soup": ingredients}.get(rule, 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="3 repeats")
    args = parser.parse_args()
    repeats = 3 if args.quick else args.repeats
    make_reproducible(1)  # the threads of a training or light job

    experiment = _common.EXPERIMENT_DIR
    settings = Settings.from_json(experiment / "settings.json")
    startup = {name: process_seconds(code, repeats) for name, code in STARTUP.items()}
    data = _common.repeat(lambda: load_prepared(experiment / "data.pt", settings.data), repeats)
    checkpoint, converted = {}, {}
    with tempfile.TemporaryDirectory() as scratch:
        for name, relative in CHECKPOINTS.items():
            path, converted[name] = _common.current_checkpoint(experiment / relative, Path(scratch))
            checkpoint[name] = _common.repeat(partial(Checkpoint.load, path), repeats)

    cold, warm = startup["import_sparse_soups_jobs"]["median"], startup["warm_client"]["median"]
    by_rule = {}
    jobs = job_cpu(experiment)
    for rule, group in jobs.groupby("rule"):
        loads = checkpoints_read(rule, settings.soup.ingredients)
        reads = 0.0 if rule == "prepare_data" else data["median"] + loads * checkpoint["sparse90"]["median"]
        mean_cpu = float(group.total.mean())
        by_rule[rule] = {
            "jobs": len(group),
            "mean_job_cpu_s": round(mean_cpu, 2),
            "checkpoints_loaded": loads,
            "overhead_cold_s": round(cold + reads, 3),
            "overhead_warm_s": round(warm + reads, 3),
            "share_of_mean_cpu_cold": round((cold + reads) / mean_cpu, 4),
            "share_of_mean_cpu_warm": round((warm + reads) / mean_cpu, 4),
        }

    payload = {
        "benchmark": "job_overhead",
        "machine": _common.machine(),
        "method": f"median of {repeats} repeats after 1 warm-up; torch threads 1; the overhead of a job is "
        "process start + imports (python -c 'import sparse_soups.jobs') + load_prepared (not for "
        "prepare_data) + Checkpoint.load of a 90%-sparse checkpoint per checkpoint the job reads",
        "process_start_s": startup,
        "load_prepared_s": data,
        "checkpoint_load_s": checkpoint,
        "checkpoint_converted_from_older_format": converted,
        "default_run_times": "each job's logged CPU line under results/fmnist_cnn/**/logs "
        "(benchmarks/default_run.py)",
        "by_rule": by_rule,
    }
    _common.write_result("job_overhead", payload, args.quick)
    print({name: s["median"] for name, s in startup.items()}, "load_prepared", data["median"])
    print("checkpoint load", {name: s["median"] for name, s in checkpoint.items()})
    for rule, row in by_rule.items():
        print(f"  {rule:13s} {row}")


if __name__ == "__main__":
    main()
