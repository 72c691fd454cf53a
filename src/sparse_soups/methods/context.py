"""What every method step shares: loading the data, models and parents, pruning to a
phase, recalibrating BatchNorm, training, and saving with the model's record.

A `Job` is one step's view of an experiment. The command line (or a test) builds it
from the settings, the prepared data and the directory name the step writes under (which
the workflow's `layout` chooses), and hands it to a method function.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import PretrainSettings, Settings
from ..kernels.checkpoints import Checkpoint, CheckpointError
from ..kernels.data import Dataset, Split, load_prepared
from ..kernels.files import sha256
from ..kernels.history import HistoryRow, Monitor, write_history
from ..kernels.models import build_model
from ..kernels.pruning import Masks, prunable_parameters, select_masks, target_density
from ..kernels.schedules import Schedule
from ..kernels.seeds import derive_seed
from ..kernels.soups import recalibrate_batchnorm
from ..kernels.training import train
from .record import ModelRecord

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Job:
    settings: Settings
    data: Path
    device: str = "cpu"
    model_dir: str = ""  # where the model lives in the run (recorded in its meta)
    history_out: Path | None = None  # a trained model's history.csv (default: beside it)
    tensorboard_dir: Path | None = None  # its TensorBoard run, with logging.tensorboard

    @cached_property
    def dataset(self) -> Dataset:
        return load_prepared(self.data, self.settings.data, self.device)

    @property
    def batch_size(self) -> int:
        return self.settings.eval_batch_size

    def record(self, seed: int, kind: str, **details: Any) -> ModelRecord:
        return ModelRecord(self.settings.name, seed, self.model_dir, kind, details)

    # --- models ---------------------------------------------------------------------

    def new_model(self) -> nn.Module:
        model = build_model(self.settings.model, self.dataset.in_channels, self.dataset.num_classes)
        memory_format = (
            torch.channels_last if self.settings.compute.channels_last else torch.contiguous_format
        )
        return model.to(self.dataset.device, memory_format=memory_format)

    def seeded_model(self, seed: int) -> nn.Module:
        """The dense model's initialization of `seed` (pretraining, GMP and rewinding share it)."""
        _ = self.dataset  # loaded first: the seed is for the weights alone
        torch.manual_seed(derive_seed(seed, "init"))
        return self.new_model()

    def load_model(self, checkpoint: Checkpoint, path: Path) -> nn.Module:
        model = self.new_model()
        try:
            model.load_state_dict(checkpoint.state_dict)
        except RuntimeError as error:
            model_settings = self.settings.model
            raise CheckpointError(
                f"checkpoint {path} does not fit model '{model_settings.name}' "
                f"(width {model_settings.width}): {error}"
            ) from error
        return model

    def load(self, path: Path) -> tuple[Checkpoint, nn.Module]:
        checkpoint = Checkpoint.load(path)
        return checkpoint, self.load_model(checkpoint, path)

    def masks_of(self, checkpoint: Checkpoint) -> Masks:
        return {name: mask.to(self.dataset.device) for name, mask in checkpoint.masks.items()}

    # --- pruning, BatchNorm, training ------------------------------------------------

    def prune_for_phase(
        self, model: nn.Module, parent: Path, parent_masks: Masks, phase: int, seed: int
    ) -> Masks:
        """Masks at this phase's density. Deterministic given the parent (random selection
        draws from a seed of the run, phase and parent checksum), so all m ingredients of
        a phase share one mask, whatever chain they belong to."""
        prune = self.settings.prune
        density = target_density(prune.sparsity, prune.phases, phase)
        generator = torch.Generator().manual_seed(derive_seed(seed, "prune", phase, sha256(parent)))
        return select_masks(model, parent_masks, density, prune.selection, prune.exclude, generator)

    def phase_density(self, phase: int) -> float:
        return target_density(self.settings.prune.sparsity, self.settings.prune.phases, phase)

    @property
    def recalibration_split(self) -> Split:
        """The same share of the training split for every BatchNorm recalibration."""
        return self.dataset.train.head(self.settings.soup.bn_recalibration_fraction)

    def recalibrate(self, model: nn.Module) -> None:
        recalibrate_batchnorm(model, self.recalibration_split, self.batch_size)

    def recalibrate_for_evaluation(self, model: nn.Module, meta: dict[str, Any]) -> bool:
        """With `evaluation.recalibrate: all`, every evaluated model gets its BatchNorm
        statistics recomputed (averaged models already have); returns whether it has them."""
        if meta.get("bn_recalibrated"):
            return True
        if self.settings.evaluation.recalibrate != "all":
            return False
        self.recalibrate(model)
        return True

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.dataset.train) / self.settings.pretrain.batch_size)

    @property
    def pretrain_steps(self) -> int:
        return self.settings.pretrain.epochs * self.steps_per_epoch

    def train_and_save(
        self,
        model: nn.Module,
        masks: Masks,
        *,
        epochs: int,
        schedule: Schedule,
        seed: int,
        record: ModelRecord,
        out: Path,
        optim: PretrainSettings | None = None,
        peak_lr: float | None = None,
        on_step: Callable[[int], None] | None = None,
        finish: Callable[[Job], None] | None = None,
    ) -> Checkpoint:
        """Train with pretraining's optimizer settings and peak LR unless given others,
        and save the model and its history.csv. `on_step` (gradual pruning, weight
        averaging) may update `masks` in place; the checkpoint stores them as they end.
        `finish` changes the model after training (weight averaging puts in its mean)."""
        optim = optim or self.settings.pretrain
        result = train(
            model, masks, self.dataset, optim=optim, peak_lr=optim.lr if peak_lr is None else peak_lr,
            epochs=epochs, schedule=schedule, seed=seed, augment=self.settings.data,
            compute=self.settings.compute, on_step=on_step, monitor=self.monitor(out),
        )  # fmt: skip
        log.info("trained %s for %d steps, final loss %.4f", self.model_dir, result.steps, result.final_loss)
        if finish is not None:
            finish(self)
        meta = {"budget_epochs": epochs, **record.to_meta(), "train_steps": result.steps}
        return self.save(model.state_dict(), masks, meta, out, history=result.history)

    def monitor(self, out: Path) -> Monitor:
        """Validation while training, as `logging` says: on the head of the validation
        split, every epoch or N steps, with TensorBoard events if asked for."""
        watch = self.settings.logging
        validation = self.dataset.val
        if watch.validation_images is not None and watch.validation_images < len(validation):
            validation = validation.head(watch.validation_images / len(validation))
        tensorboard = None
        if watch.tensorboard:
            tensorboard = self.tensorboard_dir or Path(out).parent / "tensorboard" / Path(out).stem
        batch_size = self.settings.pretrain.batch_size  # every training stage reads it
        return Monitor(validation, batch_size, watch.validate_every_steps, tensorboard)

    def save(
        self,
        state_dict: dict[str, torch.Tensor],
        masks: Masks,
        meta: dict[str, Any],
        out: Path,
        history: list[HistoryRow] | None = None,
    ) -> Checkpoint:
        """The checkpoint, and for a trained model its history.csv (empty when it was
        not trained, as a rewind point at epoch 0)."""
        if history is not None:
            out = Path(out)
            write_history(history, self.history_out or out.with_name(f"{out.stem}.history.csv"))
        checkpoint = Checkpoint(state_dict, masks, meta)
        checkpoint.save(out)
        return checkpoint


def norm_drop(model: nn.Module, old: Masks, new: Masks) -> tuple[float, float]:
    """Relative L2 norm removed by a prune, and the share of unpruned weights it removed."""
    params = prunable_parameters(model)
    before = sum(float((p.detach() * old[n]).pow(2).sum()) for n, p in params.items())
    removed = sum(float((p.detach() * (old[n] & ~new[n])).pow(2).sum()) for n, p in params.items())
    alive_before = sum(int(old[n].sum()) for n in params)
    alive_after = sum(int(new[n].sum()) for n in params)
    return math.sqrt(removed / max(before, 1e-30)), 1 - alive_after / max(alive_before, 1)
