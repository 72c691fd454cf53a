"""The GPU speed options must at least train correctly on the CPU."""

from __future__ import annotations

import pytest
import torch

from sparse_soups.config import ComputeSettings, DataSettings, PretrainSettings, RetrainSettings
from sparse_soups.kernels.evaluation import accuracy
from sparse_soups.kernels.models import SmallCNN
from sparse_soups.kernels.pruning import dense_masks, global_magnitude_masks, prunable_parameters
from sparse_soups.kernels.schedules import retrain_schedule
from sparse_soups.kernels.training import train


# `compile: true` trains through the same `train` in tests/test_gpu_check.py (with bf16 and
# channels-last), which checks its pruned weights stay zero: compiling costs a minute or
# two on 2 CPU cores, so it is done once in the suite.
@pytest.mark.parametrize(
    "compute",
    [ComputeSettings(precision="bf16"), ComputeSettings(channels_last=True)],
    ids=["bf16", "channels_last"],
)
def test_speed_options_train_and_keep_pruned_weights_zero(dataset, compute: ComputeSettings) -> None:
    torch.manual_seed(0)
    model = SmallCNN(in_channels=1, num_classes=10, width=4)
    masks = global_magnitude_masks(model, dense_masks(model), density=0.5)
    result = train(
        model, masks, dataset, optim=PretrainSettings(batch_size=32), peak_lr=0.1, epochs=3,
        schedule=retrain_schedule(RetrainSettings()), seed=0, augment=DataSettings(), compute=compute,
    )  # fmt: skip
    assert torch.isfinite(torch.tensor(result.final_loss))
    assert accuracy(model, dataset.val, 1000) > 0.3  # learned something: chance is 0.1
    for name, param in prunable_parameters(model).items():
        assert param.dtype == torch.float32
        assert torch.count_nonzero(param[~masks[name]]) == 0
