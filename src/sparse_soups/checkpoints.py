"""Checkpoint and metrics files: written atomically, read safely.

A job killed mid-write must never leave a file that a later step could mistake for a
finished result, so every file is written to a temporary name in the same directory
and renamed into place. Checkpoints are plain dicts of tensors and primitives, loaded
with `weights_only=True` so a file can never run code.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .pruning import Masks


class CheckpointError(RuntimeError):
    """A file that is missing, truncated, or not what the step expects."""


def _atomic_write(path: str | Path, write: Callable[[str], None]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would hide results from group members
    try:
        write(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    _atomic_write(path, lambda tmp: torch.save(obj, tmp))


def write_json(obj: Any, path: str | Path) -> None:
    def dump(tmp: str) -> None:
        Path(tmp).write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")

    _atomic_write(path, dump)


def load_torch_file(path: str | Path, what: str = "checkpoint") -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as error:
        raise CheckpointError(f"{what} {path} does not exist") from error
    except Exception as error:  # truncated zip, foreign pickle, ...
        raise CheckpointError(f"{what} {path} cannot be read ({type(error).__name__}: {error})") from error


@dataclass
class Checkpoint:
    """A model's weights, its pruning masks, and where it came from."""

    state_dict: dict[str, torch.Tensor]
    masks: Masks
    meta: dict[str, Any]

    def save(self, path: str | Path) -> None:
        atomic_torch_save({"state_dict": self.state_dict, "masks": self.masks, "meta": self.meta}, path)

    @classmethod
    def load(cls, path: str | Path) -> Checkpoint:
        raw = load_torch_file(path)
        missing = {"state_dict", "masks", "meta"} - set(raw if isinstance(raw, dict) else ())
        if missing:
            raise CheckpointError(f"checkpoint {path} lacks {sorted(missing)}")
        return cls(raw["state_dict"], raw["masks"], raw["meta"])
