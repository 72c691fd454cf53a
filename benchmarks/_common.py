"""Helpers shared by the benchmark scripts: timing, machine description, JSON output.

Every benchmark reports medians of several repeats, because the development machine is
shared and a single timing can be off by a factor when another job wakes up; the load
average before and after each script is recorded so a noisy run can be recognized.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml

from sparse_soups.config import Settings
from sparse_soups.kernels.checkpoints import Checkpoint, CheckpointError

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
EXPERIMENT = "fmnist_cnn"
EXPERIMENT_DIR = REPO / "results" / EXPERIMENT  # the default run's outputs


def default_settings() -> Settings:
    """The default config's experiment as the workflow would resolve it today.

    Read from config/config.yaml rather than the default run's settings.json, so that
    options added since that run (e.g. `compute`) are the current defaults.
    """
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    return Settings.from_dict({"name": EXPERIMENT, **config["experiments"][EXPERIMENT]})


def current_checkpoint(path: Path, scratch: Path) -> tuple[Path, bool]:
    """`path`, or a copy in the current checkpoint format if it was written by an older one.

    The default run's checkpoints may predate a format change; the benchmarks time the
    format that jobs read and write now. Returns the path to use and whether it was converted.
    """
    try:
        Checkpoint.load(path)
        return path, False
    except CheckpointError:
        raw = torch.load(path, map_location="cpu", weights_only=True)
        converted = scratch / path.relative_to(EXPERIMENT_DIR)
        Checkpoint(raw["state_dict"], raw["masks"], raw["meta"]).save(converted)
        return converted, True


def results_dir(quick: bool) -> Path:
    """Quick smoke passes write beside, not over, the full results."""
    return RESULTS / "quick" if quick else RESULTS


def sync(device: str) -> None:
    """GPU work is asynchronous: wait for it before reading the clock."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def seconds(fn: Callable[[], object], device: str = "cpu") -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def significant(x: float, digits: int = 4) -> float:
    return float(f"{x:.{digits}g}")


def stats(samples: list[float], digits: int = 4) -> dict[str, Any]:
    """Median, extremes and samples, to `digits` significant digits."""
    return {
        "median": significant(statistics.median(samples), digits),
        "min": significant(min(samples), digits),
        "max": significant(max(samples), digits),
        "samples": [significant(s, digits) for s in samples],
    }


def repeat(fn: Callable[[], object], repeats: int, warmup: int = 1, device: str = "cpu") -> dict[str, Any]:
    """Seconds per call: `warmup` untimed calls, then the statistics of `repeats` timed ones."""
    for _ in range(warmup):
        fn()
    return stats([seconds(fn, device) for _ in range(repeats)])


def machine(device: str = "cpu") -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": device,
        "load_average_1min": round(os.getloadavg()[0], 2),
    }
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def write_result(name: str, payload: dict[str, Any], quick: bool) -> Path:
    """benchmarks/results/{name}.json, with the load average at the end of the run."""
    payload = {**payload, "quick": quick, "load_average_1min_at_end": round(os.getloadavg()[0], 2)}
    out = results_dir(quick) / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {out.relative_to(REPO)}")
    return out
