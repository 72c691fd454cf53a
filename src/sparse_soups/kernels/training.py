"""The training loop shared by pretraining and every retrain.

Retraining inherits the optimizer settings of pretraining (momentum, Nesterov, weight
decay, batch size); only the length and the LR schedule differ. Masks are re-applied
after every optimizer step, so pruned weights are exactly zero at every step whatever
momentum and weight decay do.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..config import ComputeSettings, DataSettings, PretrainSettings
from .data import Dataset
from .pruning import Masks, apply_masks
from .schedules import Schedule
from .stopwatch import arithmetic

DEFAULT_COMPUTE = ComputeSettings()
log = logging.getLogger(__name__)


class DivergenceError(RuntimeError):
    """The loss stopped being finite: no checkpoint is written."""


def pick_device(requested: str = "auto") -> str:
    """`auto`: the GPU when there is one. Data, model and augmentation all live there."""
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {requested}: no CUDA device is available")
    return requested


def make_reproducible(threads: int) -> None:
    """One process, one thread budget: parallel jobs must not oversubscribe the cores."""
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True, warn_only=True)


@dataclass(frozen=True)
class EpochRecord:
    """What one epoch of training looked like: the figures a convergence check needs."""

    epoch: int
    step: int
    lr: float  # at the epoch's last step
    train_loss: float  # mean over the epoch's augmented batches
    train_accuracy: float
    seconds: float  # since training started


@dataclass
class TrainResult:
    steps: int
    final_loss: float
    train_accuracy: float  # on the augmented batches of the last epoch
    history: list[EpochRecord]


@arithmetic("training")
def train(
    model: nn.Module,
    masks: Masks,
    dataset: Dataset,
    *,
    optim: PretrainSettings,
    peak_lr: float,
    epochs: int,
    schedule: Schedule,
    seed: int,
    augment: DataSettings,
    compute: ComputeSettings = DEFAULT_COMPUTE,
    on_step: Callable[[int], None] | None = None,
) -> TrainResult:
    """SGD over `epochs` of the training split; `seed` fixes batch order and augmentation.

    `on_step(steps_done)` runs after each step's masking: gradual pruning updates `masks`
    in place there, and the loop keeps applying the updated masks."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=peak_lr,
        momentum=optim.momentum,
        nesterov=optim.nesterov,
        weight_decay=optim.weight_decay,
    )
    total = epochs * math.ceil(len(dataset.train) / optim.batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: schedule(step, total))
    apply_masks(model, masks)
    model.train()
    memory_format = torch.channels_last if compute.channels_last else torch.contiguous_format
    model.to(memory_format=memory_format)
    forward = torch.compile(model) if compute.compile else model
    autocast = torch.autocast(dataset.device.type, dtype=torch.bfloat16, enabled=compute.precision == "bf16")
    step, loss, history, started = 0, torch.tensor(0.0), [], time.perf_counter()
    for epoch in range(1, epochs + 1):
        correct = seen = 0
        loss_sum = torch.zeros((), device=dataset.device)
        for images, labels in dataset.training_batches(optim.batch_size, generator, augment):
            with autocast:
                logits = forward(images.contiguous(memory_format=memory_format))
                loss = nn.functional.cross_entropy(logits, labels)
            if not torch.isfinite(loss):
                raise DivergenceError(f"loss is {loss.item()} at step {step} of {total}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            apply_masks(model, masks)
            scheduler.step()
            step += 1
            if on_step is not None:
                on_step(step)
            correct += int((logits.argmax(1) == labels).sum())
            seen += len(labels)
            loss_sum += loss.detach() * len(labels)
        history.append(_epoch_record(epoch, epochs, step, optimizer, loss_sum, correct, seen, started))
    return TrainResult(
        steps=step, final_loss=loss.item(), train_accuracy=correct / max(seen, 1), history=history
    )


def _epoch_record(
    epoch: int,
    epochs: int,
    step: int,
    optimizer: torch.optim.Optimizer,
    loss_sum: torch.Tensor,
    correct: int,
    seen: int,
    started: float,
) -> EpochRecord:
    """Summarise an epoch and log it, with the time left at the pace so far."""
    elapsed = time.perf_counter() - started
    record = EpochRecord(
        epoch=epoch, step=step, lr=optimizer.param_groups[0]["lr"],
        train_loss=float(loss_sum) / max(seen, 1), train_accuracy=correct / max(seen, 1), seconds=elapsed,
    )  # fmt: skip
    log.info(
        "epoch %d/%d step %d lr %.4g loss %.4f train acc %.4f (%.0f s, ~%.0f s left)",
        epoch, epochs, step, record.lr, record.train_loss, record.train_accuracy,
        elapsed, elapsed / epoch * (epochs - epoch),
    )  # fmt: skip
    return record
