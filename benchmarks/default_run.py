"""Time the default study end to end and say where its CPU time goes.

    python benchmarks/default_run.py            # reruns everything (--forceall)
    python benchmarks/default_run.py --no-run   # only summarize the last run's logs

Writes benchmarks/results/default_run.json:
- the run's wall time and its whole CPU time (Snakemake, the warm worker and every job:
  `getrusage(RUSAGE_CHILDREN)` around `snakemake --cores 8`);
- the arithmetic each job reports on its last log line (`cpu ... s: training ..., evaluation
  ..., merging ..., data ..., other ...`, from kernels/stopwatch.py), summed per rule;
- the overhead: the run's CPU time that is not arithmetic (process start, imports, loading
  and saving files, Snakemake), and its share of the whole.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
KINDS = ("training", "evaluation", "merging", "data", "reporting")
CPU_LINE = re.compile(
    r"cpu (?P<total>[\d.]+) s: training (?P<training>[\d.]+) s, evaluation (?P<evaluation>[\d.]+) s, "
    r"merging (?P<merging>[\d.]+) s, data (?P<data>[\d.]+) s(?:, reporting (?P<reporting>[\d.]+) s)?, "
    r"other (?P<other>[\d.]+) s"
)
# A log's rule, from its path under the experiment's (or a seed's) logs/ directory.
RULE = re.compile(
    r"^(report|prepare_data|corrupt_test_set|pretrain|evaluate|ensemble|soup|lottery_pools|gmp_sms|gmp|retrain|imp_rewind|rewind_point|\w+?)(?:[_/.]|$)"
)


WORKER_LOG = REPO / ".snakemake" / "log" / "sparse_soups_worker.log"
WORKER_JOB = re.compile(r"^job \d+ [\w-]*: cpu (?P<cpu>[\d.]+) s, waited (?P<waited>[\d.]+) s$", re.M)
WORKER_SELF = re.compile(r"^worker: cpu (?P<cpu>[\d.]+) s$", re.M)
# `snakemake` that also writes its own process's CPU seconds (all its threads, the
# settings jobs it runs in them included; not its children) to $SNAKEMAKE_CPU_FILE.
SNAKEMAKE_WITH_OWN_CPU = """
import atexit, os, resource
from snakemake.cli import main

def own_cpu():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    with open(os.environ["SNAKEMAKE_CPU_FILE"], "w") as out:
        out.write(str(usage.ru_utime + usage.ru_stime))

atexit.register(own_cpu)
main()
"""


# The machine's speed, measured before the run: the same jobs' arithmetic took 1,272-3,278
# CPU s on different hosts here, so a wall time means little without it. One thread, as
# every job.
MACHINE_SPEED = """
import json, platform, time, torch
torch.set_num_threads(1)
a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
seconds = []
for _ in range(6):
    start = time.perf_counter()
    a @ b
    seconds.append(time.perf_counter() - start)
start = time.perf_counter()
total = 0
for i in range(5_000_000):
    total += i
loop = time.perf_counter() - start
cpu_model = [line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")]
print(json.dumps({
    "cpu_model": cpu_model[0] if cpu_model else platform.processor(),
    "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
    "matmul_2048_fp32_1_thread_gflop_per_s": round(2 * 2048**3 / min(seconds[1:]) / 1e9, 1),
    "python_loop_5m_additions_s": round(loop, 2),
}))
"""


def machine_speed() -> dict[str, object]:
    """CPU model, torch's vector instruction set, 1-thread fp32 matmul GFLOP/s and a pure
    Python loop: what the run's seconds should be read against."""
    out = subprocess.run([sys.executable, "-c", MACHINE_SPEED], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def run_workflow(cores: int) -> dict[str, float]:
    """Wall and CPU seconds of the whole run (Snakemake and everything it started), split
    into Snakemake's own process, the warm worker's own process and its job processes
    (exits included; the worker's log), and the rest (job shells and thin clients)."""
    logged = WORKER_LOG.stat().st_size if WORKER_LOG.exists() else 0
    own_cpu_file = REPO / ".snakemake" / "snakemake_cpu.txt"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", SNAKEMAKE_WITH_OWN_CPU, "--cores", str(cores), "--forceall", "--quiet"],
        cwd=REPO, check=True, env=dict(os.environ, SNAKEMAKE_CPU_FILE=str(own_cpu_file)),
    )  # fmt: skip
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(WORKER_LOG, "rb") as stream:
        stream.seek(logged)
        log = stream.read().decode(errors="replace")
    jobs = list(WORKER_JOB.finditer(log))
    return {
        "wall": wall,
        "cpu": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
        "worker_jobs": sum(float(m["cpu"]) for m in jobs),
        "waited": sum(float(m["waited"]) for m in jobs),
        "worker": sum(float(m["cpu"]) for m in WORKER_SELF.finditer(log)),
        "snakemake": float(own_cpu_file.read_text()),
    }


def job_cpu(experiment_dir: Path) -> pd.DataFrame:
    """One row per job log with the CPU line: its rule and its seconds per kind."""
    rows = []
    for path in sorted(experiment_dir.rglob("logs/**/*.log")):
        match = CPU_LINE.search(path.read_text(errors="replace"))
        if not match:
            continue
        relative = path.relative_to(next(p for p in path.parents if p.name == "logs"))
        rule = RULE.match(str(relative)).group(1)
        rows.append(
            {
                "rule": rule,
                "log": str(path.relative_to(REPO)),
                **{k: float(v or 0) for k, v in match.groupdict().items()},
            }
        )
    return pd.DataFrame(rows)


def summarize(jobs: pd.DataFrame, run: dict[str, float] | None, cores: int) -> dict:
    by_rule = jobs.groupby("rule").agg(
        jobs=("total", "size"), **{k: (k, "sum") for k in ("total", *KINDS, "other")}
    )
    arithmetic = {kind: round(float(jobs[kind].sum()), 1) for kind in KINDS}
    summary = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "command": f"snakemake --cores {cores} --forceall --quiet",
        "jobs_with_cpu_line": len(jobs),
        "arithmetic_cpu_seconds": arithmetic,
        "jobs_cpu_seconds": round(float(jobs["total"].sum()), 1),
    }
    if run is not None:
        wall, cpu = run["wall"], run["cpu"]
        summary["wall_seconds"] = round(wall, 1)
        summary["wall_minutes"] = round(wall / 60, 2)
        summary["run_cpu_seconds"] = round(cpu, 1)
        overhead = cpu - sum(arithmetic.values())
        summary["overhead_cpu_seconds"] = round(overhead, 1)
        summary["overhead_share"] = round(overhead / cpu, 4)
        # The strict reading: everything but training and evaluation arithmetic.
        summary["not_training_or_evaluation_share"] = round(
            (cpu - arithmetic["training"] - arithmetic["evaluation"]) / cpu, 4
        )
        summary["job_processes_cpu_seconds"] = round(run["worker_jobs"], 1)
        # Snakemake, its job shells, the clients and the worker's own process.
        summary["outside_job_processes_cpu_seconds"] = round(cpu - run["worker_jobs"], 1)
        summary["snakemake_process_cpu_seconds"] = round(run["snakemake"], 1)
        summary["worker_process_cpu_seconds"] = round(run["worker"], 1)
        summary["shells_and_clients_cpu_seconds"] = round(
            cpu - run["worker_jobs"] - run["snakemake"] - run["worker"], 1
        )
        # Jobs Snakemake had started that waited in the worker's queue for a free CPU.
        summary["jobs_waiting_for_a_cpu_seconds"] = round(run["waited"], 1)
    summary["by_rule"] = by_rule.round(1).reset_index().to_dict(orient="records")
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-run", action="store_true", help="summarize the existing logs")
    parser.add_argument("--cores", type=int, default=8)
    parser.add_argument("--experiment", default="fmnist_cnn")
    args = parser.parse_args()
    speed = None if args.no_run else machine_speed()
    run = None if args.no_run else run_workflow(args.cores)
    jobs = job_cpu(REPO / "results" / args.experiment)
    summary = summarize(jobs, run, args.cores)
    if speed is not None:
        summary["machine"] |= speed
    if args.no_run:  # keep the last run's whole-run figures
        out = REPO / "benchmarks" / "results" / "default_run.json"
        if out.exists():
            last = json.loads(out.read_text())
            for key, value in last.items():
                if summary.get(key) is None or key == "machine":
                    summary[key] = value
    out = REPO / "benchmarks" / "results" / "default_run.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(pd.DataFrame(summary["by_rule"]).to_string(index=False))
    print(json.dumps({k: v for k, v in summary.items() if k != "by_rule"}, indent=2))


if __name__ == "__main__":
    main()
