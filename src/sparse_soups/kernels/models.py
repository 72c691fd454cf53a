"""Model registry: architectures are looked up by the `model.name` setting.

Every constructor takes `(in_channels, num_classes, **options)`, so a workflow can build
any architecture from a name and the dataset's shape alone. The CIFAR variants use a 3x3
stem without max-pool (32x32 inputs would otherwise shrink to 8x8 before the first stage).
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

from ..config import ModelSettings
from ..registry import MODELS


def get_model(name: str, in_channels: int, num_classes: int, **options: object) -> nn.Module:
    """Build the architecture registered as `name` (see `registry.MODELS`); options go to
    its constructor."""
    return MODELS.get(name)(in_channels=in_channels, num_classes=num_classes, **options)


def build_model(settings: ModelSettings, in_channels: int, num_classes: int) -> nn.Module:
    """The configured architecture, given only the `model.*` options it takes (its
    registration's `options`; the others have published shapes)."""
    options = {key: getattr(settings, key) for key in MODELS.info(settings.name).get("options", ())}
    return get_model(settings.name, in_channels, num_classes, **options)


def _conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


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


class MLP(nn.Module):
    """Fully connected net for MNIST-like inputs: flatten, `depth` hidden ReLU layers.

    `width` is the hidden size (the classic MNIST MLP is 784-300-100-10: hidden=(300, 100)).
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        width: int = 300,
        hidden: tuple[int, ...] | None = None,
        image_size: int = 28,
    ) -> None:
        super().__init__()
        sizes = [in_channels * image_size * image_size, *(hidden or (width, width // 3))]
        layers: list[nn.Module] = [nn.Flatten()]
        for a, b in itertools.pairwise(sizes):
            layers += [nn.Linear(a, b), nn.ReLU(inplace=True)]
        layers.append(nn.Linear(sizes[-1], num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity (or 1x1 conv-BN projection) shortcut."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet with a 3x3 stem and no max-pool, stages of BasicBlocks, global average pool."""

    def __init__(self, in_channels: int, num_classes: int, widths: tuple[int, ...], blocks: tuple[int, ...]):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU(True)
        )
        stages, in_planes = [], widths[0]
        for i, (planes, n) in enumerate(zip(widths, blocks, strict=True)):
            for j in range(n):
                stages.append(BasicBlock(in_planes, planes, 2 if (i > 0 and j == 0) else 1))
                in_planes = planes
        self.layers = nn.Sequential(*stages)
        self.fc = nn.Linear(in_planes, num_classes)

    def forward(self, x):
        out = self.layers(self.stem(x))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(out, 1), 1))


def resnet18(in_channels: int = 3, num_classes: int = 10) -> nn.Module:
    """ResNet-18 for CIFAR (Kuang Liu's variant): 11,173,962 parameters for 10 classes."""
    return CifarResNet(in_channels, num_classes, (64, 128, 256, 512), (2, 2, 2, 2))


def resnet56(in_channels: int = 3, num_classes: int = 10) -> nn.Module:
    """He et al.'s CIFAR ResNet-56 (3 stages x 9 blocks, widths 16/32/64), ~0.85M parameters.

    Shortcuts that change shape use a 1x1 conv projection (option B) rather than zero-padding.
    """
    return CifarResNet(in_channels, num_classes, (16, 32, 64), (9, 9, 9))


VGG16_LAYERS = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


class VGG16(nn.Module):
    """VGG-16 with BatchNorm, CIFAR variant: 13 conv-BN-ReLU layers, 5 max-pools, and one
    linear classifier on the 512-d 1x1 feature map (no 4096-wide FC layers): 14,728,266
    parameters for 10 classes (the variant common in CIFAR pruning work).
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 10) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for item in VGG16_LAYERS:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(channels, item, 3, padding=1), nn.BatchNorm2d(item), nn.ReLU(True)]
                channels = item
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(512, num_classes)

    def forward(self, x):
        out = nn.functional.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(torch.flatten(out, 1))


class WideBlock(nn.Module):
    """Pre-activation block of Zagoruyko & Komodakis: BN-ReLU-conv twice, with dropout between."""

    def __init__(self, in_planes: int, planes: int, stride: int, dropout: float, bias: bool = False) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=bias)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=bias)
        self.dropout = nn.Dropout(dropout)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride, bias=bias)

    def forward(self, x):
        pre = torch.relu(self.bn1(x))
        out = self.conv2(self.dropout(torch.relu(self.bn2(self.conv1(pre)))))
        return out + (x if self.shortcut is None else self.shortcut(pre))


class WideResNet(nn.Module):
    """WideResNet-depth-k: (depth - 4) / 6 blocks per stage, widths 16k/32k/64k.

    WRN-28-10 has 36,479,194 parameters for 10 classes.
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 10,
        depth: int = 28,
        widen: int = 10,
        dropout: float = 0.0,
        bias: bool = False,
    ) -> None:
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WideResNet depth must be 6n + 4, got {depth}")
        n = (depth - 4) // 6
        widths = (16, 16 * widen, 32 * widen, 64 * widen)
        self.stem = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=bias)
        blocks, in_planes = [], widths[0]
        for stage, planes in enumerate(widths[1:]):
            for j in range(n):
                stride = 2 if (stage > 0 and j == 0) else 1
                blocks.append(WideBlock(in_planes, planes, stride, dropout, bias))
                in_planes = planes
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(in_planes)
        self.fc = nn.Linear(in_planes, num_classes)

    def forward(self, x):
        out = torch.relu(self.bn(self.blocks(self.stem(x))))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(out, 1), 1))


def wrn28_10(in_channels: int = 3, num_classes: int = 10, dropout: float = 0.0) -> nn.Module:
    return WideResNet(in_channels, num_classes, depth=28, widen=10, dropout=dropout)


def wrn22_10(in_channels: int = 3, num_classes: int = 100, dropout: float = 0.3) -> nn.Module:
    """CIFAR-100's WideResNet in the authors' code (ZIB-IOL/SMS, `WideResNet20`): depth 22,
    width 10, dropout 0.3, convolutions with biases: 26,863,460 parameters at 100 classes.
    Their block applies dropout before the second BatchNorm and strides in its second
    conv; ours drops out after it and strides in the first, which changes no parameter."""
    return WideResNet(in_channels, num_classes, depth=22, widen=10, dropout=dropout, bias=True)


def resnet50(in_channels: int = 3, num_classes: int = 1000) -> nn.Module:
    """torchvision's ImageNet ResNet-50 (25,557,032 parameters at 1000 classes), random init."""
    import torchvision

    model = torchvision.models.resnet50(weights=None, num_classes=num_classes)
    if in_channels != 3:
        model.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
    return model


class SegmentationHead(nn.Module):
    """A torchvision segmentation model that returns its main head's logits (N, classes,
    H, W) as a tensor, as the training loop, BatchNorm recalibration and evaluation expect
    (torchvision returns a dict, with `aux` when built with an auxiliary head)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)["out"]


def _torchvision_segmentation(name: str, in_channels: int, num_classes: int) -> nn.Module:
    import torchvision

    if in_channels != 3:
        raise ValueError(
            f"model.name {name}: torchvision's segmentation models take 3 channels, not {in_channels}"
        )
    build = getattr(torchvision.models.segmentation, name)
    return SegmentationHead(
        build(weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=False)
    )


def deeplabv3_resnet50(in_channels: int = 3, num_classes: int = 19) -> nn.Module:
    """torchvision's DeepLabV3 with a ResNet-50 backbone (dilated, output stride 8), random
    init: the standard Cityscapes baseline."""
    return _torchvision_segmentation("deeplabv3_resnet50", in_channels, num_classes)


def fcn_resnet50(in_channels: int = 3, num_classes: int = 19) -> nn.Module:
    """torchvision's FCN with a ResNet-50 backbone, random init."""
    return _torchvision_segmentation("fcn_resnet50", in_channels, num_classes)


class TinySegNet(nn.Module):
    """A small encoder-decoder for tests and quick checks: two conv-BN-ReLU-pool stages of
    width w and 2w, a 1x1 classifier, bilinear upsampling back to the input size."""

    def __init__(self, in_channels: int = 3, num_classes: int = 19, width: int = 16) -> None:
        super().__init__()
        self.features = nn.Sequential(_conv_block(in_channels, width), _conv_block(width, 2 * width))
        self.classifier = nn.Conv2d(2 * width, num_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.classifier(self.features(x))
        return nn.functional.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


def transformer(in_channels: int = 1, num_classes: int = 32_000, width: int = 512, depth: int = 6,
                dropout: float = 0.1) -> nn.Module:  # fmt: skip
    """The encoder-decoder Transformer for translation (kernels/translation.py) with
    `num_classes` tokens, d_model `width` (heads of 64 dimensions, feed-forward 4 x width) and
    `depth` encoder and decoder layers; Transformer-base is width 512, depth 6. `in_channels`
    is unused: its inputs are token ids."""
    from .translation import transformer_translator

    return transformer_translator(
        num_classes, d_model=width, heads=max(1, width // 64), encoder_layers=depth, decoder_layers=depth,
        feedforward=4 * width, dropout=dropout,
    )  # fmt: skip
