"""The names a researcher extends: soup methods, pruning criteria, datasets and models.

Each registry maps a config value (`soup.methods`, `prune.selection`, `data.dataset`,
`model.name`) to its implementation. The built-in entries are named here as
`"module:attribute"` and imported only when a job uses them, so the workflow can check a
config and plan its jobs without importing torch. The config schema's enums, the
workflow's wildcard constraints and the report's labels are all read from these
registries (`tests/test_architecture.py` checks that they agree).

A new entry is one `register` call: in this file for a built-in, or in a plugin module
named under `plugins:` in the workflow config (see README, "Extending").
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Entry:
    target: Any  # the implementation, or "module:attribute" to import on first use
    label: str
    info: dict[str, Any] = field(default_factory=dict)


class Registry:
    """Name -> implementation, with a display label and free-form facts (`info`)."""

    def __init__(self, key: str, what: str) -> None:
        self.key, self.what = key, what  # the config key it serves, e.g. "soup.methods"
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, target: Any = None, *, label: str | None = None, **info: Any) -> Any:
        """`register(name, target)`, or `@register(name)` over a function or class."""
        if not name.isidentifier():
            raise ValueError(f"{self.what} name {name!r} must be an identifier (it becomes a directory)")

        def add(implementation: Any) -> Any:
            self._entries[name] = Entry(implementation, label or name, info)
            return implementation

        return add if target is None else add(target)

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def _entry(self, name: str) -> Entry:
        if name not in self._entries:
            raise ValueError(f"{self.key}: unknown {self.what} '{name}' (known: {', '.join(self.names())})")
        return self._entries[name]

    def get(self, name: str) -> Any:
        """The implementation, imported now if it was registered by name."""
        entry = self._entry(name)
        if isinstance(entry.target, str):
            module, _, attribute = entry.target.partition(":")
            entry.target = getattr(importlib.import_module(module), attribute)
        return entry.target

    def label(self, name: str) -> str:
        return self._entry(name).label

    def info(self, name: str) -> dict[str, Any]:
        return self._entry(name).info


SOUP_METHODS = Registry("soup.methods", "soup method")
PRUNING_CRITERIA = Registry("prune.selection", "pruning criterion")
DATASETS = Registry("data.dataset", "dataset")
MODELS = Registry("model.name", "model")
REGISTRIES: dict[str, Registry] = {
    "soup_methods": SOUP_METHODS,
    "pruning_criteria": PRUNING_CRITERIA,
    "datasets": DATASETS,
    "models": MODELS,
}

_K = "sparse_soups.kernels"
# Soup methods: each is an SMS chain of its own. A selection method chooses which of a
# phase's ingredients to average (see kernels/soups.py); `swa`: its chain's retrains keep a
# stochastic weight average (SWAMP's particles, merging.swa_fraction).
SOUP_METHODS.register("uniform", f"{_K}.soups:uniform_selection", label="SMS uniform")
SOUP_METHODS.register("greedy", f"{_K}.soups:greedy_soup", label="SMS greedy")
SOUP_METHODS.register("swamp", f"{_K}.soups:uniform_selection", label="SWAMP", swa=True)
# Merging operators (`merges`: a function of methods/operators.Pot, see kernels/merging.py);
# `base`: it merges the updates relative to the phase's pruned starting model.
for _name, _label, _base in (
    ("learned", "SMS learned", False),
    ("model_stock", "SMS Model Stock", True),
    ("ties", "SMS TIES", True),
    ("dare", "SMS DARE", True),
    ("fisher", "SMS Fisher", False),
):
    SOUP_METHODS.register(
        _name, f"sparse_soups.methods.operators:{_name}", label=_label, merges=True, base=_base
    )
# Pruning criteria score the unpruned weights; `scope` says whether the top-k is taken over
# all layers together or per layer (see kernels/pruning.py).
PRUNING_CRITERIA.register("global", f"{_K}.pruning:magnitude_scores", scope="global")
PRUNING_CRITERIA.register("layerwise", f"{_K}.pruning:magnitude_scores", scope="layer")
PRUNING_CRITERIA.register("random", f"{_K}.pruning:random_scores", scope="global")
# Datasets: a loader, given the `data` settings, of the raw train/test tensors and their
# source (or, `streamed`, of an index of the files; see kernels/datasets/), the official
# training set's size (checked against the splits before any job runs) and the paper's
# augmentation (crop padding, flip, rotation degrees). A dataset with torchvision's
# `(root, train=..., download=...)` API needs only its class (an attribute of
# torchvision.datasets, "module:Class" or the class) as `torchvision_class`, and the target
# `load_torchvision`, which reads `data.root` or downloads into `data.download_root`.
for _name, _loader, _cls, _size, _aug in (
    ("fashion_mnist", "load_fashion_mnist", "FashionMNIST", 60_000, (4, True, 0.0)),
    ("mnist", "load_torchvision", "MNIST", 60_000, (0, False, 0.0)),
    ("cifar10", "load_torchvision", "CIFAR10", 50_000, (4, True, 0.0)),
    ("cifar100", "load_torchvision", "CIFAR100", 50_000, (4, True, 15.0)),
):
    DATASETS.register(
        _name, f"{_K}.datasets:{_loader}", torchvision_class=_cls, train_size=_size, augmentation=_aug,
        streamed=False,
    )  # fmt: skip
DATASETS.register("imagenet", f"{_K}.datasets.imagenet:prepare", train_size=1_281_167, streamed=True)
# Celeb-A: its loader returns the official train/valid/test splits with each image's group
# (`official_splits`: data.validation_fraction does not apply; `groups`: the report gets
# worst-group accuracy).
DATASETS.register(
    "celeba", f"{_K}.datasets.celeba:load_celeba", train_size=162_770, augmentation=(4, True, 0.0),
    streamed=False, official_splits=True, groups=True,
)  # fmt: skip
# Cityscapes: semantic segmentation (`task`: its loss and metrics, kernels/tasks.py), the
# official validation split as the test set; 19 classes.
DATASETS.register(
    "cityscapes", f"{_K}.datasets.cityscapes:load_cityscapes", train_size=2_975, augmentation=(0, True, 0.0),
    streamed=False, task="segmentation",
)  # fmt: skip
# WMT16 German-English: translation; prepared into token ids and a tokenizer (kernels/datasets/
# wmt16.py), newstest2015 as validation and newstest2016 as the test set.
DATASETS.register(
    "wmt16_de_en", f"{_K}.datasets.wmt16:prepare_wmt16", train_size=4_548_885, streamed=False,
    task="translation", prepared=True, official_splits=True,
)  # fmt: skip
# Models: a factory (in_channels, num_classes, **options); `options` are the `model.*`
# settings it takes, the others have published shapes.
for _name, _factory, _options in (
    ("cnn", "SmallCNN", ("width",)),
    ("mlp", "MLP", ("width",)),
    ("resnet18", "resnet18", ()),
    ("resnet56", "resnet56", ()),
    ("vgg16", "VGG16", ()),
    ("wrn", "WideResNet", ("depth", "widen", "dropout")),
    ("wrn28_10", "wrn28_10", ("dropout",)),
    ("wrn22_10", "wrn22_10", ("dropout",)),
    ("resnet50", "resnet50", ()),
):
    MODELS.register(_name, f"{_K}.models:{_factory}", options=_options)
# Segmentation models: logits per pixel, (N, classes, H, W); `task` must match the dataset's.
# `in_channels`: the only number of input channels a model takes (torchvision's take 3).
for _name, _factory, _options, _channels in (
    ("deeplabv3_resnet50", "deeplabv3_resnet50", (), {"in_channels": 3}),
    ("fcn_resnet50", "fcn_resnet50", (), {"in_channels": 3}),
    ("seg_cnn", "TinySegNet", ("width",), {}),
):
    MODELS.register(_name, f"{_K}.models:{_factory}", options=_options, task="segmentation", **_channels)
# Translation: an encoder-decoder Transformer over token ids (kernels/translation.py); width is
# d_model, depth the layers of encoder and decoder each; its inputs are token ids, no channels.
MODELS.register(
    "transformer", f"{_K}.models:transformer", options=("width", "depth", "dropout"), task="translation",
    in_channels=1,
)  # fmt: skip

PLUGINS_VARIABLE = "SPARSE_SOUPS_PLUGINS"


def load_plugins(modules: Iterable[str] = ()) -> list[str]:
    """Import plugin modules (which register entries) named in the config or, for jobs,
    in the environment variable the workflow sets; returns their names."""
    names = [*modules, *filter(None, os.environ.get(PLUGINS_VARIABLE, "").split(","))]
    for name in dict.fromkeys(names):
        importlib.import_module(name)
    return list(dict.fromkeys(names))
