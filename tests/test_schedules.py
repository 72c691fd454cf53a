from __future__ import annotations

import itertools
import math

import pytest
import torch

from sparse_soups.config import PretrainSettings, RetrainSettings
from sparse_soups.kernels.schedules import pretrain_schedule, retrain_schedule


def test_llr_warms_up_for_ten_percent_then_decays_linearly_to_zero() -> None:
    llr = retrain_schedule(RetrainSettings(warmup_fraction=0.1))
    total = 100  # 10 warm-up steps, then 90 steps of linear decay
    expected = {0: 0.1, 4: 0.5, 9: 1.0, 10: 1.0, 55: 0.5, 99: 1 / 90}
    for step, factor in expected.items():
        assert llr(step, total) == pytest.approx(factor), step


def test_llr_through_torch_scheduler_gives_peak_times_factor() -> None:
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=0.2)
    llr = retrain_schedule(RetrainSettings(warmup_fraction=0.1))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: llr(s, 20))
    rates = []
    for _ in range(20):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates[0] == pytest.approx(0.1)  # warm-up of 2 steps: 0.1, 0.2
    assert max(rates) == pytest.approx(0.2)
    assert rates[11] == pytest.approx(0.2 * (1 - 9 / 18))
    assert all(a >= b for a, b in itertools.pairwise(rates[1:]))  # after warm-up


@pytest.mark.parametrize(
    ("schedule", "step", "factor"),
    [
        ("linear", 0, 1.0),
        ("linear", 50, 0.5),
        ("linear", 75, 0.25),
        ("cosine", 50, 0.5),
        ("cosine", 25, 0.5 * (1 + math.cos(math.pi / 4))),
        ("step", 49, 1.0),
        ("step", 50, 0.1),
        ("step", 75, 0.01),
        ("constant", 99, 1.0),
    ],
)
def test_pretrain_schedules_without_warmup(schedule: str, step: int, factor: float) -> None:
    assert pretrain_schedule(PretrainSettings(schedule=schedule))(step, 100) == pytest.approx(factor)


def test_pretrain_warmup_then_cosine() -> None:
    cosine = pretrain_schedule(PretrainSettings(schedule="cosine", warmup_fraction=0.2))
    assert cosine(0, 50) == pytest.approx(0.1)  # 10 warm-up steps
    assert cosine(9, 50) == pytest.approx(1.0)
    assert cosine(30, 50) == pytest.approx(0.5)  # halfway through the 40 decay steps


def test_unknown_schedule_is_named() -> None:
    with pytest.raises(ValueError, match=r"pretrain\.schedule.*'exponential'"):
        pretrain_schedule(PretrainSettings(schedule="exponential"))
