"""Checkpoint and metrics files: written atomically, read safely.

A job killed mid-write must never leave a file that a later step could mistake for a
finished result, so every file is written to a temporary name in the same directory
and renamed into place. Checkpoints are plain dicts of tensors and primitives, loaded
with `weights_only=True` so a file can never run code.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .files import atomic_write_bytes
from .pruning import Masks


class CheckpointError(RuntimeError):
    """A file that is missing, truncated, or not what the step expects."""


class NonFiniteError(ValueError):
    """NaN or infinity where a number is computed: averaging, scoring or writing it would
    spread it silently into every later result."""


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """Serialized in memory first: torch.save names the archive after the file it writes,
    so saving to a temporary name would make identical checkpoints differ byte-wise."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_torch_file(path: str | Path, what: str = "checkpoint", mmap: bool = False) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except FileNotFoundError as error:
        raise CheckpointError(f"{what} {path} does not exist") from error
    except Exception as error:  # truncated zip, foreign pickle, ...
        raise CheckpointError(f"{what} {path} cannot be read ({type(error).__name__}: {error})") from error


FORMAT = "sparse-soups-checkpoint-v1"


def pack_sparse(weight: torch.Tensor, mask: torch.Tensor) -> dict[str, Any]:
    """A pruned weight as its kept values and a bit-packed mask: ~(1 - s) * 32 + 1 bits
    a weight instead of 32, so a 90%-sparse model takes about a sixth of the space."""
    flat_mask = mask.detach().cpu().flatten()
    return {
        "shape": list(weight.shape),
        "mask_bits": torch.from_numpy(np.packbits(flat_mask.numpy())),
        "values": weight.detach().cpu().flatten()[flat_mask].clone(),
    }


def _packed_problem(packed: object) -> str | None:
    """Why a `sparse` entry is not what `pack_sparse` writes, or None."""
    if not isinstance(packed, dict):
        return f"is a {type(packed).__name__}, not a packed weight"
    shape, bits, values = packed.get("shape"), packed.get("mask_bits"), packed.get("values")
    if not isinstance(shape, list | tuple) or not all(isinstance(n, int) and n >= 0 for n in shape):
        return f"has shape {shape!r}"
    if (
        not isinstance(bits, torch.Tensor)
        or bits.dtype != torch.uint8
        or bits.numel() != -(-math.prod(shape) // 8)
    ):
        return "has no mask bits of its shape"
    if not isinstance(values, torch.Tensor) or values.dim() != 1:
        return "has no values"
    return None


def unpack_sparse(packed: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    numel = math.prod(packed["shape"])
    bits = np.unpackbits(packed["mask_bits"].numpy(), count=numel).astype(bool)
    mask = torch.from_numpy(bits)
    weight = torch.zeros(numel, dtype=packed["values"].dtype)
    weight[mask] = packed["values"]
    return weight.view(packed["shape"]), mask.view(packed["shape"])


@dataclass
class Checkpoint:
    """A model's weights, its pruning masks, and where it came from.

    On disk, masked weights are stored compactly (`pack_sparse`); everything else as is.
    Tensors are moved to the CPU, so a checkpoint made on a GPU loads anywhere.
    """

    state_dict: dict[str, torch.Tensor]
    masks: Masks
    meta: dict[str, Any]

    def save(self, path: str | Path) -> None:
        """Refuses non-finite weights: a NaN soup must stop its job, not feed the next phase."""
        _check_finite(self.state_dict, f"refusing to write {path}:")
        sparse = {name: pack_sparse(self.state_dict[name], mask) for name, mask in self.masks.items()}
        dense = {k: v.detach().cpu() for k, v in self.state_dict.items() if k not in self.masks}
        atomic_torch_save({"format": FORMAT, "dense": dense, "sparse": sparse, "meta": self.meta}, path)

    @classmethod
    def load(cls, path: str | Path) -> Checkpoint:
        raw = load_torch_file(path)
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            found = raw.get("format") if isinstance(raw, dict) else type(raw).__name__
            raise CheckpointError(f"checkpoint {path} is not in format {FORMAT} (found {found!r})")
        problem = _structure_problem(raw)
        if problem is not None:
            raise CheckpointError(f"checkpoint {path} is damaged: {problem}")
        try:
            state_dict, masks = dict(raw["dense"]), {}
            for name, packed in raw["sparse"].items():
                state_dict[name], masks[name] = unpack_sparse(packed)
        except (KeyError, RuntimeError, ValueError) as error:
            raise CheckpointError(
                f"checkpoint {path} is damaged ({type(error).__name__}: {error})"
            ) from error
        _check_finite(state_dict, f"checkpoint {path}:")
        return cls(state_dict, masks, raw["meta"])


def _structure_problem(raw: dict[str, Any]) -> str | None:
    """What a loaded checkpoint lacks of the layout `Checkpoint.save` writes, or None."""
    for part in ("dense", "sparse", "meta"):
        if not isinstance(raw.get(part), dict):
            return f"'{part}' is {'missing' if part not in raw else type(raw[part]).__name__}, not a dict"
    for name, value in raw["dense"].items():
        if not isinstance(value, torch.Tensor):
            return f"dense entry '{name}' is a {type(value).__name__}, not a tensor"
    for name, packed in raw["sparse"].items():
        if (problem := _packed_problem(packed)) is not None:
            return f"sparse entry '{name}' {problem}"
    return None


def _check_finite(state_dict: dict[str, torch.Tensor], what: str) -> None:
    """Name the first tensor holding NaN or infinity (weights and BatchNorm statistics)."""
    for name, tensor in state_dict.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise CheckpointError(f"{what} '{name}' holds {bad} NaN or infinite value(s) of {tensor.numel()}")
