"""Checkpoint size on disk, dense against sparse: `python benchmarks/checkpoint_sizes.py`.

Why: a study writes P x m x seeds x methods checkpoints, and on a shared file system their
size is what fills quotas. The package stores each pruned weight tensor as its kept values
and a bit-packed mask (`sparse_soups.kernels.checkpoints.pack_sparse`); this measures what that
saves against the obvious format, `torch.save` of the state dict with boolean masks
beside it, at the default config's sparsity after every IMP phase.

Sizes depend only on the model and the number of kept weights, not on trained values, so
the default model is built from its seeded initialization and pruned by global magnitude.
"""

from __future__ import annotations

import argparse
import io
import tempfile
from pathlib import Path
from typing import Any

import _common
import torch

from sparse_soups.kernels.checkpoints import Checkpoint
from sparse_soups.kernels.models import build_model
from sparse_soups.kernels.pruning import (
    dense_masks,
    global_magnitude_masks,
    prunable_parameters,
    target_density,
)


def naive_bytes(state_dict: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> int:
    """`torch.save({"state_dict": ..., "masks": ...})`: dense weights plus one byte a mask entry."""
    buffer = io.BytesIO()
    torch.save({"state_dict": state_dict, "masks": masks}, buffer)
    return buffer.getbuffer().nbytes


def package_bytes(state_dict: dict[str, torch.Tensor], masks: dict[str, torch.Tensor], scratch: Path) -> int:
    path = scratch / "model.pt"
    Checkpoint(state_dict, masks, {"phase": 0}).save(path)
    return path.stat().st_size


def measure(scratch: Path) -> dict[str, Any]:
    settings = _common.default_settings()
    torch.manual_seed(0)
    model = build_model(settings.model, in_channels=1, num_classes=10)
    weights = sum(p.numel() for p in prunable_parameters(model).values())
    rows = []
    masks = dense_masks(model)
    for phase in range(settings.prune.phases + 1):
        density = target_density(settings.prune.sparsity, settings.prune.phases, phase)
        if phase:
            masks = global_magnitude_masks(model, masks, density)
            with torch.no_grad():
                for name, param in prunable_parameters(model).items():
                    param.mul_(masks[name])
        state = {k: v.clone() for k, v in model.state_dict().items()}
        naive, package = naive_bytes(state, masks), package_bytes(state, masks, scratch)
        rows.append(
            {
                "phase": phase,
                "sparsity": round(1 - density, 4),
                "naive_bytes": naive,
                "package_bytes": package,
                "package_over_naive": round(package / naive, 4),
            }
        )
    return {
        "model": settings.model.name,
        "width": settings.model.width,
        "prunable_weights": weights,
        "by_phase": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="accepted for run_all; this benchmark is quick")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        result = measure(Path(scratch))
    _common.write_result("checkpoint_sizes", {"machine": _common.machine(), **result}, args.quick)


if __name__ == "__main__":
    main()
