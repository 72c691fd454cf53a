"""The training loop shared by pretraining and every retrain.

Retraining inherits the optimizer settings of pretraining (momentum, Nesterov, weight
decay, batch size); only the length and the LR schedule differ. Masks are re-applied
after every optimizer step, so pruned weights are exactly zero at every step whatever
momentum and weight decay do.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..config import ComputeSettings, DataSettings, PretrainSettings
from .data import Dataset
from .history import HistoryRow, Monitor
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


def make_optimizer(model: nn.Module, optim: PretrainSettings, peak_lr: float) -> torch.optim.Optimizer:
    """SGD with momentum (the paper's image tasks) or AdamW with the Transformer's betas."""
    if optim.optimizer == "adamw":
        return torch.optim.AdamW(
            model.parameters(), lr=peak_lr, betas=(0.9, 0.98), weight_decay=optim.weight_decay
        )
    return torch.optim.SGD(
        model.parameters(), lr=peak_lr, momentum=optim.momentum, nesterov=optim.nesterov,
        weight_decay=optim.weight_decay,
    )  # fmt: skip


@dataclass
class TrainResult:
    steps: int
    final_loss: float
    history: list[HistoryRow]  # the monitor's rows: before the first step, then each epoch or N steps


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
    monitor: Monitor | None = None,
) -> TrainResult:
    """SGD over `epochs` of the training split; `seed` fixes batch order and augmentation.

    `on_step(steps_done)` runs after each step's masking: gradual pruning updates `masks`
    in place there, and the loop keeps applying the updated masks. `monitor` validates and
    records the run (history.py); by default, once per epoch, without validation."""
    monitor = monitor or Monitor(None, optim.batch_size)
    generator = torch.Generator().manual_seed(seed)
    optimizer = make_optimizer(model, optim, peak_lr)
    steps_per_epoch = math.ceil(len(dataset.train) / optim.batch_size)
    total = epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: schedule(step, total))
    apply_masks(model, masks)
    model.train()
    memory_format = torch.channels_last if compute.channels_last else torch.contiguous_format
    model.to(memory_format=memory_format)
    forward = torch.compile(model) if compute.compile else model
    autocast = torch.autocast(dataset.device.type, dtype=torch.bfloat16, enabled=compute.precision == "bf16")
    monitor.start(model, masks, optimizer.param_groups[0]["lr"], total, steps_per_epoch)
    step, loss = 0, torch.tensor(0.0)
    running = _Running(dataset.device)
    for _epoch in range(epochs):
        for images, labels in dataset.training_batches(optim.batch_size, generator, augment):
            if images.dim() == 4:  # image batches; token ids (translation) stay as they are
                images = images.contiguous(memory_format=memory_format)
            with autocast:
                logits, labels = dataset.task.forward(forward, images, labels)
                loss = dataset.task.loss(logits, labels)
            if not torch.isfinite(loss):
                raise DivergenceError(f"loss is {loss.item()} at step {step} of {total}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            lr = optimizer.param_groups[0]["lr"]
            optimizer.step()
            apply_masks(model, masks)
            scheduler.step()
            step += 1
            if on_step is not None:
                on_step(step)
            running.add(loss, *dataset.task.correct(logits, labels), lr)
            if monitor.every_steps is not None and (step % monitor.every_steps == 0 or step == total):
                running.record(monitor, model, masks, step)
        if monitor.every_steps is None:
            running.record(monitor, model, masks, step)
    if monitor.rows[-1].step != step:  # a streamed epoch shorter than planned
        running.record(monitor, model, masks, step)
    monitor.close()
    return TrainResult(steps=step, final_loss=loss.item(), history=monitor.rows)


class _Running:
    """Train loss and accuracy since the last history row, summed on the device so that
    a step does not wait for the GPU."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._reset()

    def _reset(self) -> None:
        self.loss_sum = torch.zeros((), device=self.device)
        self.correct = torch.zeros((), dtype=torch.long, device=self.device)
        self.seen, self.lr = 0, 0.0

    def add(self, loss: torch.Tensor, correct: torch.Tensor, counted: int, lr: float) -> None:
        """`correct` of `counted` predictions (images, or labelled pixels) at this step."""
        self.loss_sum += loss.detach() * counted
        self.correct += correct
        self.seen += counted
        self.lr = lr

    def record(self, monitor: Monitor, model: nn.Module, masks: Masks, step: int) -> None:
        monitor.record(
            model, masks, step=step, lr=self.lr, loss_sum=float(self.loss_sum),
            correct=int(self.correct), seen=self.seen,
        )  # fmt: skip
        self._reset()
