"""Result files written atomically, without torch: Snakemake's own process writes the
per-stage settings files with these, and importing torch there costs seconds per run."""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any


def _write_bytes(path: str, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write to a temporary file beside `path`, then rename: readers see all or nothing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would hide results from group members
    try:
        _write_bytes(tmp, data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def non_finite_field(obj: Any, prefix: str = "") -> str | None:
    """The dotted key of the first NaN or infinite number in nested dicts and lists."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return prefix or "value"
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list | tuple) else ()
    for key, value in items:
        found = non_finite_field(value, f"{prefix}.{key}" if prefix else str(key))
        if found is not None:
            return found
    return None


def write_json(obj: Any, path: str | Path) -> None:
    """Refuses NaN and infinity: JSON has no such numbers, and a metric that is NaN
    means something upstream broke, which must stop the run rather than reach a table."""
    field = non_finite_field(obj)
    if field is not None:
        raise ValueError(f"refusing to write {path}: '{field}' is not a finite number")
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n").encode())


def sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
