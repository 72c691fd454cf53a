from __future__ import annotations

import pytest
import torch

from sparse_soups.config import ModelSettings
from sparse_soups.kernels.models import MODELS, SmallCNN, WideResNet, build_model, get_model


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# published counts: ResNet-18 (CIFAR, Kuang Liu) 11.17M, ResNet-56 0.85M, WRN-28-10 36.5M,
# VGG-16-bn CIFAR variant with one linear layer 14.7M, torchvision ResNet-50 25,557,032
@pytest.mark.parametrize(
    ("name", "in_channels", "num_classes", "expected"),
    [
        ("resnet18", 3, 10, 11_173_962),
        ("resnet56", 3, 10, 855_770),
        ("wrn28_10", 3, 10, 36_479_194),
        ("vgg16", 3, 10, 14_728_266),
        ("resnet50", 3, 1000, 25_557_032),
        ("mlp", 1, 10, 784 * 300 + 300 + 300 * 100 + 100 + 100 * 10 + 10),
    ],
)
def test_parameter_counts(name: str, in_channels: int, num_classes: int, expected: int) -> None:
    assert count(get_model(name, in_channels, num_classes)) == expected


@pytest.mark.parametrize(
    ("name", "shape", "num_classes"),
    [
        ("cnn", (2, 1, 28, 28), 10),
        ("mlp", (2, 1, 28, 28), 10),
        ("resnet18", (2, 3, 32, 32), 100),
        ("resnet56", (2, 3, 32, 32), 10),
        ("vgg16", (2, 3, 32, 32), 10),
        ("wrn28_10", (2, 3, 16, 16), 10),
        ("resnet50", (2, 3, 64, 64), 1000),
    ],
)
def test_forward_shape(name: str, shape: tuple[int, ...], num_classes: int) -> None:
    model = get_model(name, shape[1], num_classes).eval()
    with torch.no_grad():
        out = model(torch.randn(shape))
    assert out.shape == (shape[0], num_classes) and torch.isfinite(out).all()


def test_wrn_is_configurable_and_one_channel_inputs_work() -> None:
    small = WideResNet(1, 10, depth=10, widen=1)
    assert len(small.blocks) == 3
    assert small(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    with pytest.raises(ValueError, match="6n \\+ 4"):
        WideResNet(3, 10, depth=27)
    assert get_model("resnet18", 1, 10)(torch.randn(1, 1, 28, 28)).shape == (1, 10)


def test_registry_and_backward_compatible_build_model() -> None:
    assert {"cnn", "mlp", "resnet18", "resnet56", "vgg16", "wrn", "wrn28_10", "resnet50"} <= set(
        MODELS.names()
    )
    model = build_model(ModelSettings(name="cnn", width=4), 1, 10)
    assert isinstance(model, SmallCNN) and model.classifier.in_features == 4 * 4 * 9
    assert count(build_model(ModelSettings(name="resnet56", width=32), 3, 10)) == 855_770  # width ignored
    with pytest.raises(ValueError, match="unknown model 'alexnet'"):
        get_model("alexnet", 3, 10)


@pytest.mark.parametrize(
    ("name", "shape", "num_classes", "folded"),
    [
        ("cnn", (4, 1, 28, 28), 10, True),
        ("mlp", (4, 1, 28, 28), 10, True),  # none to fold: none left
        ("resnet18", (4, 3, 32, 32), 100, True),
        ("vgg16", (4, 3, 32, 32), 10, True),
        ("wrn28_10", (4, 3, 16, 16), 10, False),  # pre-activation: BatchNorm comes before the conv
    ],
)
def test_evaluation_folds_batchnorm_without_changing_the_function(
    name: str, shape: tuple[int, ...], num_classes: int, folded: bool
) -> None:
    """Evaluation runs a copy with BatchNorm folded into the conv before it: same outputs
    up to rounding, pruned weights still zero, and the model itself untouched."""
    from sparse_soups.kernels.evaluation import inference_model
    from sparse_soups.kernels.pruning import apply_masks, dense_masks, global_magnitude_masks

    torch.manual_seed(0)
    model = get_model(name, shape[1], num_classes)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):  # stats far from the identity
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
            module.weight.data.uniform_(0.5, 1.5)
    masks = global_magnitude_masks(model, dense_masks(model), 0.2)
    apply_masks(model, masks)
    before = {key: value.clone() for key, value in model.state_dict().items()}
    fast = inference_model(model)
    images = torch.randn(shape)
    with torch.no_grad():
        torch.testing.assert_close(fast(images), model.eval()(images), rtol=1e-4, atol=1e-5)
    batchnorms = sum(isinstance(module, torch.nn.BatchNorm2d) for module in fast.modules())
    assert (batchnorms == 0) == folded
    assert all(torch.equal(value, model.state_dict()[key]) for key, value in before.items())
    convs = [module.weight for module in fast.modules() if isinstance(module, torch.nn.Conv2d)]
    zeros = sum(int((weight == 0).sum()) for weight in convs)
    pruned_convs = sum(int((~mask).sum()) for key, mask in masks.items() if before[key].dim() == 4)
    assert zeros >= pruned_convs
