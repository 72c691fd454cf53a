"""Model registry: architectures are looked up by the `model.name` setting."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from .config import ModelSettings

ModelFactory = Callable[..., nn.Module]
MODELS: dict[str, ModelFactory] = {}


def register(name: str) -> Callable[[ModelFactory], ModelFactory]:
    def decorator(factory: ModelFactory) -> ModelFactory:
        MODELS[name] = factory
        return factory

    return decorator


def build_model(settings: ModelSettings, in_channels: int, num_classes: int) -> nn.Module:
    if settings.name not in MODELS:
        raise ValueError(f"model.name: unknown model '{settings.name}' (known: {sorted(MODELS)})")
    return MODELS[settings.name](in_channels=in_channels, num_classes=num_classes, width=settings.width)


def _conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


@register("cnn")
class SmallCNN(nn.Module):
    """Three conv-BN-ReLU-pool blocks (width w, 2w, 4w) and a linear classifier.

    Sized for 28x28 inputs: 28 -> 14 -> 7 -> 3. With w = 32 it has ~104k weights, wide
    enough that 90% sparsity still leaves room for retraining to matter.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 32) -> None:
        super().__init__()
        self.features = nn.Sequential(
            _conv_block(in_channels, width),
            _conv_block(width, 2 * width),
            _conv_block(2 * width, 4 * width),
        )
        self.classifier = nn.Linear(4 * width * 3 * 3, num_classes)

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))
