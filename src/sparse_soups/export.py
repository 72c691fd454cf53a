"""Models you can reuse: a checkpoint as a plain state dict that loads with no package code.

A package checkpoint stores pruned weights bit-packed and says nothing of the model's
shape, so only this package can read it. `export` writes what any PyTorch user can load:

- `--format safetensors`: FILE holds the dense state dict (zeros where pruned), which
  `model.load_state_dict(load_file(FILE), strict=True)` takes as is; the masks go beside
  it in `masks_path(FILE)` (`model.masks.safetensors` for `model.safetensors`), as boolean
  tensors under the names of the weights they mask. Both headers carry `metadata`.
- `--format torch`: one file `{"state_dict": ..., "masks": ..., "metadata": ...}`, read
  with `torch.load(FILE, weights_only=True)`.

The metadata (all values strings, as safetensors requires; numbers and dicts as JSON) name
the registry model and the keyword arguments that rebuild it, the sparsity, the phase and
lineage, the checkpoint's whole `meta`, and the sha256 of the source checkpoint file.
`load_model` reads a package checkpoint or either export back as a model with its masks.
"""

from __future__ import annotations

import itertools
import json
import logging
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save
from torch import nn

from ._version import __version__
from .config import ModelSettings, Settings
from .kernels.checkpoints import (
    FORMAT,
    Checkpoint,
    CheckpointError,
    atomic_torch_save,
    load_torch_file,
)
from .kernels.files import atomic_write_bytes, sha256
from .kernels.models import get_model
from .kernels.pruning import Masks
from .registry import MODELS
from .stages import read_settings

log = logging.getLogger(__name__)

EXPORT_FORMAT = "sparse-soups-export-v1"
FORMATS = ("safetensors", "torch")
# Facts of the checkpoint's meta copied to their own metadata keys (when it has them).
META_KEYS = ("experiment", "seed", "model_dir", "kind", "method", "lineage", "phase", "recipe")
SettingsLike = Settings | ModelSettings | str | Path | None


def masks_path(out: str | Path) -> Path:
    """Where the masks of a safetensors export go: `model.safetensors` -> `model.masks.safetensors`."""
    out = Path(out)
    return out.with_name(out.name.removesuffix(".safetensors") + ".masks.safetensors")


# --- which model a checkpoint is ------------------------------------------------------


def _find_settings(path: Path, meta: dict[str, Any]) -> Path:
    """The settings of the run a checkpoint lies in: it is `results/{experiment}/seed{s}/
    {model_dir}/model.pt`, its experiment's settings `results/{experiment}/settings.json`."""
    model_dir = Path(str(meta.get("model_dir", "")))
    looked: list[Path] = []
    if model_dir.parts and not model_dir.is_absolute():
        parents = path.resolve().parent.parents
        if len(model_dir.parts) < len(parents):
            experiment_dir = parents[len(model_dir.parts)]
            looked = [experiment_dir / "settings.json", experiment_dir / "settings" / "evaluate.json"]
            for candidate in looked:
                if candidate.is_file():
                    return candidate
    where = f" (looked for {', '.join(map(str, looked))})" if looked else ""
    raise CheckpointError(
        f"checkpoint {path}: cannot tell its model without the run's settings{where}; pass --settings"
    )


def _model_settings(settings: SettingsLike, path: Path, meta: dict[str, Any]) -> ModelSettings:
    if isinstance(settings, ModelSettings):
        return settings
    if isinstance(settings, Settings):
        return settings.model
    return read_settings(settings if settings is not None else _find_settings(path, meta)).model


def _shapes(name: str, options: dict[str, Any], in_channels: int, num_classes: int) -> dict[str, torch.Size]:
    with torch.device("meta"):  # shapes only: no memory, no initialization cost
        model = get_model(name, in_channels, num_classes, **options)
    return {key: value.shape for key, value in model.state_dict().items()}


def _solve(base: dict, step: dict, state_dict: dict[str, torch.Tensor]) -> int | None:
    """The value of a constructor argument that is 1 in `base` and 2 in `step`: every size
    it changes grows by the same amount for each unit (conv channels, MLP inputs, logits)."""
    for key, shape in base.items():
        for dim, (one, two) in enumerate(zip(shape, step[key], strict=True)):
            if one != two and key in state_dict and state_dict[key].dim() == len(shape):
                units, rest = divmod(state_dict[key].shape[dim] - one, two - one)
                return 1 + units if not rest else None
    return None


def constructor_kwargs(model: ModelSettings, state_dict: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The keyword arguments of `get_model(model.name, **kwargs)`. A checkpoint does not
    record the dataset's channels and classes, so they are read off its tensor shapes."""
    options = {key: getattr(model, key) for key in MODELS.info(model.name).get("options", ())}
    fixed = MODELS.info(model.name).get("in_channels")  # models that take only one channel count
    channels = fixed or 1
    base = _shapes(model.name, options, channels, 1)
    in_channels = fixed or _solve(base, _shapes(model.name, options, 2, 1), state_dict)
    num_classes = _solve(base, _shapes(model.name, options, channels, 2), state_dict)
    if in_channels is None or num_classes is None:
        raise CheckpointError(f"the tensors' shapes do not fit model '{model.name}' with {options}")
    return {"in_channels": in_channels, "num_classes": num_classes, **options}


def build(name: str, kwargs: dict[str, Any], state_dict: dict[str, torch.Tensor], path: Path) -> nn.Module:
    """The registry's model holding exactly `state_dict` (loaded strictly), in eval mode.
    Built on the meta device and handed the tensors: no initialization to throw away."""
    with torch.device("meta"):
        model = get_model(name, **kwargs)
    try:
        model.load_state_dict(state_dict, strict=True, assign=True)
    except RuntimeError as error:
        raise CheckpointError(f"{path} does not fit model '{name}' ({kwargs}): {error}") from error
    if any(tensor.is_meta for tensor in itertools.chain(model.parameters(), model.buffers())):
        model = get_model(name, **kwargs)  # it has tensors no state dict holds: initialize them
        model.load_state_dict(state_dict, strict=True)
    return model.eval()


# --- export -----------------------------------------------------------------------------


def _sparsity(masks: Masks) -> float:
    """Share of the masked (prunable) weights that are pruned."""
    total = sum(mask.numel() for mask in masks.values())
    return 1 - sum(int(mask.sum()) for mask in masks.values()) / max(total, 1)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def export_metadata(
    checkpoint: Checkpoint, source: Path, name: str, kwargs: dict[str, Any], model: nn.Module
) -> dict[str, str]:
    """The header of an export: enough to rebuild the model and to trace it to its file."""
    meta = checkpoint.meta
    metadata = {
        "format": EXPORT_FORMAT,
        "model": name,
        "model_kwargs": kwargs,
        "model_class": f"{type(model).__module__}.{type(model).__qualname__}",
        "sparsity": _sparsity(checkpoint.masks),
        **{key: meta[key] for key in META_KEYS if key in meta},
        "checkpoint_meta": meta,
        "source_checkpoint": source.name,
        "source_sha256": sha256(source),
        "sparse_soups_version": __version__,
    }
    return {key: _text(value) for key, value in metadata.items()}


def _plain(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous CPU tensors sharing no memory: what safetensors accepts."""
    return {key: value.detach().cpu().contiguous().clone() for key, value in tensors.items()}


def export(
    source: str | Path, out: str | Path, file_format: str = "safetensors", settings: SettingsLike = None
) -> list[Path]:
    """Write a package checkpoint as a plain state dict (see the module's docstring);
    returns the files written. The model is rebuilt and loaded first, so an export that
    is written always loads."""
    source, out = Path(source), Path(out)
    if file_format not in FORMATS:
        raise ValueError(f"export format '{file_format}' is none of {FORMATS}")
    checkpoint = Checkpoint.load(source)
    model_settings = _model_settings(settings, source, checkpoint.meta)
    name, kwargs = model_settings.name, constructor_kwargs(model_settings, checkpoint.state_dict)
    model = build(name, kwargs, checkpoint.state_dict, source)
    metadata = export_metadata(checkpoint, source, name, kwargs, model)
    written = [out] if file_format == "torch" else [out, masks_path(out)]
    if source.resolve() in {path.resolve() for path in written}:
        raise ValueError(f"export {out} would overwrite its checkpoint {source}")
    state_dict, masks = _plain(checkpoint.state_dict), _plain(checkpoint.masks)
    if file_format == "torch":
        atomic_torch_save({"state_dict": state_dict, "masks": masks, "metadata": metadata}, out)
    else:
        atomic_write_bytes(written[1], save(masks, metadata={**metadata, "content": "masks"}))
        atomic_write_bytes(out, save(state_dict, metadata={**metadata, "masks_file": written[1].name}))
    log.info("exported %s (%s) to %s", source, name, ", ".join(map(str, written)))
    return written


# --- loading ------------------------------------------------------------------------------


def _is_safetensors(path: Path) -> bool:
    """A safetensors file starts with its header's length (8 bytes) and the header's '{'."""
    try:
        with open(path, "rb") as handle:
            return handle.read(9)[8:] == b"{"
    except FileNotFoundError as error:
        raise CheckpointError(f"model file {path} does not exist") from error


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    try:
        with safe_open(path, framework="pt") as handle:
            metadata = handle.metadata() or {}
        return load_file(path), metadata
    except (SafetensorError, OSError) as error:
        problem = f"{type(error).__name__}: {error}"
        raise CheckpointError(f"model file {path} cannot be read ({problem})") from error


def _read_any(path: Path) -> tuple[dict[str, torch.Tensor], Masks, dict[str, str]] | Checkpoint:
    """State dict, masks and metadata of an export in either format, or the checkpoint."""
    if _is_safetensors(path):
        state_dict, metadata = _read_safetensors(path)
        masks_file = path.with_name(metadata.get("masks_file", masks_path(path).name))
        if not masks_file.is_file():
            raise CheckpointError(f"the masks of {path} are missing: no file {masks_file}")
        return state_dict, _read_safetensors(masks_file)[0], metadata
    raw = load_torch_file(path, what="model file", mmap=True)  # mapped: tensors are read once, below
    if isinstance(raw, dict) and raw.get("format") == FORMAT:
        return Checkpoint.load(path)
    if not isinstance(raw, dict) or not isinstance(raw.get("metadata"), dict) or "state_dict" not in raw:
        raise CheckpointError(f"model file {path} is neither a sparse-soups checkpoint nor an export")
    return raw["state_dict"], raw.get("masks", {}), raw["metadata"]


def load_model(path: str | Path, settings: SettingsLike = None) -> nn.Module:
    """A package checkpoint or an export as its model, in eval mode, with its masks as
    `model.masks` and the checkpoint's meta as `model.meta`. A package checkpoint needs
    its run's settings: found from where it lies in `results/`, or given as `settings`."""
    path = Path(path)
    found = _read_any(path)
    if isinstance(found, Checkpoint):
        model_settings = _model_settings(settings, path, found.meta)
        kwargs = constructor_kwargs(model_settings, found.state_dict)
        return _with(build(model_settings.name, kwargs, found.state_dict, path), found.masks, found.meta)
    state_dict, masks, metadata = found
    if metadata.get("format") != EXPORT_FORMAT:
        raise CheckpointError(f"model file {path} is not in format {EXPORT_FORMAT}")
    model = build(metadata["model"], json.loads(metadata["model_kwargs"]), state_dict, path)
    return _with(model, masks, json.loads(metadata.get("checkpoint_meta", "{}")))


def _with(model: nn.Module, masks: Masks, meta: dict[str, Any]) -> nn.Module:
    model.masks = {name: mask.bool() for name, mask in masks.items()}
    model.meta = meta
    return model
