"""What a training job records as it runs: validation, history.csv, progress lines, TensorBoard.

A `Monitor` is handed to `training.train`, which tells it when a stretch of training
(an epoch, or `every_steps` steps) ends. It then scores the model on the head of the
validation split, appends a `HistoryRow`, logs one line with the time left at the pace
so far (so `tail -f` on the job's log shows progress) and, if asked, writes the row's
scalars to TensorBoard. Validation runs in eval mode on a BatchNorm-folded copy and draws
no random numbers, so the trained model is bitwise the same with or without it.

A row is also taken before the first step: for a retrain, the accuracy right after
pruning, which the curves need to show how far retraining recovers.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from .data import Split
from .evaluation import accuracy
from .files import atomic_write_bytes
from .pruning import Masks

if TYPE_CHECKING:
    from .datasets.imagenet import StreamedSplit

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class HistoryRow:
    """One point of a training curve. Train loss and accuracy are means over the
    augmented batches since the previous row (NaN for the row before the first step)."""

    epoch: float  # epochs done: fractional when validating every N steps
    step: int
    lr: float  # of the step just taken (of the first step, for the row before it)
    train_loss: float
    train_accuracy: float
    val_accuracy: float
    sparsity: float  # share of prunable weights that are pruned
    seconds: float  # since training started, validation included


HISTORY_COLUMNS = tuple(field.name for field in dataclasses.fields(HistoryRow))


def mask_sparsity(masks: Masks) -> float:
    total = sum(mask.numel() for mask in masks.values())
    kept = sum(int(mask.sum()) for mask in masks.values())
    return 1 - kept / total if total else 0.0


class Monitor:
    """Validation and records of one training run (see the module docstring).

    `validation` is None for callers that want only the train-loss curve (benchmarks);
    the rows then carry NaN validation accuracy."""

    def __init__(
        self,
        validation: Split | StreamedSplit | None,
        batch_size: int,
        every_steps: int | None = None,
        tensorboard_dir: Path | None = None,
    ) -> None:
        self.validation = validation
        self.batch_size = batch_size
        self.every_steps = every_steps
        self.tensorboard_dir = tensorboard_dir
        self.rows: list[HistoryRow] = []
        self._writer = None
        self._started = 0.0

    def start(self, model: nn.Module, masks: Masks, lr: float, total: int, steps_per_epoch: int) -> None:
        self.total, self.steps_per_epoch = total, steps_per_epoch
        if self.tensorboard_dir is not None:
            from torch.utils.tensorboard import SummaryWriter  # the optional extra

            # purge_step 0 hides the events of an earlier attempt at this run (kept on disk).
            self._writer = SummaryWriter(str(self.tensorboard_dir), purge_step=0)
        self._started = time.perf_counter()
        self.record(model, masks, step=0, lr=lr, loss_sum=math.nan, correct=0, seen=0)

    def record(
        self, model: nn.Module, masks: Masks, *, step: int, lr: float, loss_sum: float, correct: int,
        seen: int,
    ) -> HistoryRow:  # fmt: skip
        row = HistoryRow(
            epoch=step / self.steps_per_epoch,
            step=step,
            lr=lr,
            train_loss=loss_sum / seen if seen else math.nan,
            train_accuracy=correct / seen if seen else math.nan,
            val_accuracy=self._validate(model),
            sparsity=mask_sparsity(masks),
            seconds=time.perf_counter() - self._started,
        )
        self.rows.append(row)
        self._log(row)
        if self._writer is not None:
            self._write_scalars(row)
        return row

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def _validate(self, model: nn.Module) -> float:
        if self.validation is None:
            return math.nan
        was_training = model.training
        with torch.no_grad():
            score = accuracy(model, self.validation, self.batch_size)
        model.train(was_training)
        return score

    def _log(self, row: HistoryRow) -> None:
        left = row.seconds / row.step * (self.total - row.step) if row.step else math.nan
        log.info(
            "epoch %.4g/%.4g step %d/%d lr %.4g loss %.4f train acc %.4f val acc %.4f sparsity %.4f "
            "(%.0f s, ~%.0f s left)",
            row.epoch, self.total / self.steps_per_epoch, row.step, self.total, row.lr, row.train_loss,
            row.train_accuracy, row.val_accuracy, row.sparsity, row.seconds, left,
        )  # fmt: skip

    def _write_scalars(self, row: HistoryRow) -> None:
        for name in ("lr", "train_loss", "train_accuracy", "val_accuracy", "sparsity"):
            value = getattr(row, name)
            if not math.isnan(value):
                self._writer.add_scalar(name, value, row.step)
        self._writer.flush()


def write_history(rows: Sequence[HistoryRow], path: str | Path) -> None:
    """history.csv, written atomically: a killed job leaves none or a whole one."""
    write_rows(
        [{name: getattr(row, name) for name in HISTORY_COLUMNS} for row in rows], path, HISTORY_COLUMNS
    )


def write_rows(rows: Sequence[dict[str, float | int]], path: str | Path, columns: Sequence[str] = ()) -> None:
    """A CSV of `rows` (columns: the given ones, or the first row's keys), atomically; the
    learned soup writes its optimization this way."""
    columns = tuple(columns) or tuple(rows[0] if rows else ())
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_format(row[name]) for name in columns])
    atomic_write_bytes(path, buffer.getvalue().encode())


def _format(value: float | int) -> str:
    if isinstance(value, int):
        return str(value)
    return "" if math.isnan(value) else f"{value:.6g}"


def read_history(path: str | Path) -> list[HistoryRow]:
    """The rows of a history.csv (empty cells are NaN)."""
    with open(path, newline="") as file:
        reader = csv.DictReader(file)
        if tuple(reader.fieldnames or ()) != HISTORY_COLUMNS:
            raise ValueError(f"{path}: columns {reader.fieldnames}, expected {list(HISTORY_COLUMNS)}")
        return [
            HistoryRow(**{
                name: int(raw[name]) if name == "step" else float(raw[name] or "nan")
                for name in HISTORY_COLUMNS
            })
            for raw in reader
        ]  # fmt: skip
