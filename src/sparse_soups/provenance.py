"""What produced a set of results: settings, code version, software, hardware."""

from __future__ import annotations

import datetime
import importlib.metadata
import platform
import socket
import subprocess
from pathlib import Path
from typing import Any

import torch

from . import __version__
from .config import Settings
from .kernels.files import write_json

PACKAGES = ("torch", "torchvision", "snakemake", "numpy", "pandas")


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def git_commit(directory: Path) -> dict[str, Any] | None:
    """The checkout's commit and whether it has uncommitted changes (None outside git)."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=directory, capture_output=True, text=True, check=True
        ).stdout.strip()

    try:
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain"))}
    except (OSError, subprocess.CalledProcessError):
        return None


def provenance(settings: Settings, code_dir: Path) -> dict[str, Any]:
    return {
        "settings": settings.to_dict(),
        "seeds": list(settings.seeds),
        "sparse_soups": __version__,
        "git": git_commit(code_dir),
        "packages": {package: _version(package) for package in PACKAGES},
        "python": platform.python_version(),
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "cpu_threads": torch.get_num_threads(),
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def write_settings_and_provenance(settings: Settings, output: Any, code_dir: str | Path) -> None:
    """The `settings` rule: `output.settings` and `output.provenance` as JSON."""
    write_json(settings.to_dict(), output.settings)
    write_json(provenance(settings, Path(code_dir)), output.provenance)
