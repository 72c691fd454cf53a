"""benchmarks/gpu_check.py, prepared and tested on CPU: the one command a GPU session
runs must work before a GPU is lent (README, Performance)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO


def test_gpu_check_runs_every_check_on_cpu_and_writes_its_report(tmp_path: Path) -> None:
    out = tmp_path / "gpu_check.json"
    run = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--device", "cpu", "--quick",
         "--cores", "2", "--out", str(out)],
        capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    report = json.loads(out.read_text())
    assert run.returncode == 0, json.dumps(report, indent=1)[-3000:]
    workflow = report["workflow"]
    assert workflow["jobs_ran_on"] == ["cpu"] and workflow["metrics_files"] >= 5
    assert all(0.0 <= accuracy <= 1.0 for accuracy in workflow["soup_test_accuracy"])
    repeat = report["bitwise_repeat"]
    assert repeat["identical_bytes"] and repeat["max_abs_difference"] == 0.0  # CPU is deterministic
    variants = report["pruned_stay_zero"]["variants"]
    assert set(variants) == {"fp32", "bf16", "channels_last", "all"}  # all: bf16, channels-last, compile
    assert all(v["nonzero_pruned_weights"] == 0 for v in variants.values())
    throughput = report["throughput"]
    assert {"package", "minimal", "dataloader_w0", "dataloader_w2"} == set(throughput["images_per_s"])
    assert all(rate > 0 for rate in throughput["images_per_s"].values())
    assert 0 < throughput["peak"]["package_fraction"] < 2
    assert set(throughput["data_on_device"]) == {"speedup_over_dataloader_w0", "speedup_over_dataloader_w2"}
