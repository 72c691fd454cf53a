"""Merging operators beyond averaging, weight by weight on ingredients that share one mask.

Every operator here combines the ingredients' updates `tau_i = theta_i - theta_0` relative to
the phase's pruned starting model `theta_0`, entry by entry. A pruned entry is zero in
`theta_0` and in every ingredient, so its update is zero and so is its merge: the soup keeps
the phase's mask, which is the fact that SMS rests on (tests check it for each operator).
State dict entries that are not floating point (BatchNorm's `num_batches_tracked`) are taken
from the first ingredient; BatchNorm statistics are recalibrated after any merge anyway.

- Model Stock (Jang et al., ECCV 2024): per tensor, the ratio t = k cos / (1 + (k - 1) cos)
  from the mean pairwise cosine of the k updates; merge t * mean(theta_i) + (1 - t) * theta_0.
- TIES (Yadav et al., NeurIPS 2023): keep each update's largest `density` share by magnitude,
  elect each entry's sign by the sign of the kept updates' sum, average the kept entries that
  agree with it, and add `scale` times that to theta_0.
- DARE (Yu et al., ICML 2024): drop each update entry with probability `drop_rate`, rescale
  the rest by 1 / (1 - drop_rate), average, add to theta_0 (seeded).
- Fisher-weighted averaging (Matena & Raffel, NeurIPS 2022): sum_i F_i theta_i / sum_i F_i
  with each ingredient's diagonal Fisher F_i (the plain mean where all F_i are zero),
  estimated by `diagonal_fisher` as the mean squared per-example gradient of the loss.
- Learned soup (Wortsman et al., ICML 2022): softmax-parameterized mixing coefficients per
  ingredient (or per ingredient and tensor) fitted on validation data with AdamW.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence

import torch

StateDict = dict[str, torch.Tensor]


def _merged(ingredients: Sequence[StateDict], merge_float: Callable[[str], torch.Tensor]) -> StateDict:
    out: StateDict = {}
    for key, first in ingredients[0].items():
        out[key] = merge_float(key) if first.is_floating_point() else first.clone()
    return out


def updates(ingredients: Sequence[StateDict], base: StateDict, key: str) -> torch.Tensor:
    """The k updates of one tensor, stacked: (k, *shape)."""
    return torch.stack([ingredient[key] - base[key] for ingredient in ingredients])


def mean_pairwise_cosine(stacked: torch.Tensor) -> float:
    """Mean cosine similarity over the pairs of rows of `stacked` (k, ...); 0 for a zero row."""
    flat = stacked.flatten(1).double()
    norms = flat.norm(dim=1)
    cosines = [
        float(flat[i] @ flat[j] / (norms[i] * norms[j])) if norms[i] > 0 and norms[j] > 0 else 0.0
        for i, j in itertools.combinations(range(len(flat)), 2)
    ]
    return sum(cosines) / len(cosines) if cosines else 1.0


def model_stock_ratio(k: int, cosine: float) -> float:
    """Model Stock's interpolation ratio toward the ingredients' mean, in [0, 1] (a negative
    mean cosine, outside the method's assumptions, keeps theta_0)."""
    cosine = max(0.0, cosine)
    return k * cosine / (1 + (k - 1) * cosine)


def model_stock(ingredients: Sequence[StateDict], base: StateDict) -> tuple[StateDict, dict[str, float]]:
    """The Model Stock merge and its ratio per tensor (reported: how far toward the mean)."""
    ratios: dict[str, float] = {}

    def merge(key: str) -> torch.Tensor:
        stacked = updates(ingredients, base, key)
        ratio = model_stock_ratio(len(ingredients), mean_pairwise_cosine(stacked))
        ratios[key] = ratio
        return base[key] + ratio * stacked.mean(0)  # t * mean(theta_i) + (1 - t) * theta_0

    return _merged(ingredients, merge), ratios


def _trimmed(update: torch.Tensor, density: float) -> torch.Tensor:
    """The update with all but its largest `density` share of entries (by magnitude) zeroed;
    the share is of its nonzero entries, so pruned weights do not count toward it."""
    nonzero = int((update != 0).sum())
    keep = round(density * nonzero)
    if keep <= 0:
        return torch.zeros_like(update)
    threshold = update.abs().flatten().topk(keep).values[-1]
    return torch.where(update.abs() >= threshold, update, torch.zeros_like(update))


def ties_merge(
    ingredients: Sequence[StateDict], base: StateDict, density: float = 0.2, scale: float = 1.0
) -> StateDict:
    """TIES: trim each update to its top `density` share, elect signs, disjoint mean."""
    if not 0 < density <= 1:
        raise ValueError(f"TIES density {density} is not in (0, 1]")

    def merge(key: str) -> torch.Tensor:
        trimmed = torch.stack([_trimmed(u, density) for u in updates(ingredients, base, key)])
        sign = torch.sign(trimmed.sum(0))
        agree = (torch.sign(trimmed) == sign) & (trimmed != 0)
        count = agree.sum(0)
        merged = torch.where(agree, trimmed, torch.zeros_like(trimmed)).sum(0) / count.clamp(min=1)
        return base[key] + scale * merged

    return _merged(ingredients, merge)


def dare_merge(
    ingredients: Sequence[StateDict], base: StateDict, drop_rate: float, generator: torch.Generator
) -> StateDict:
    """DARE: drop update entries at random, rescale the survivors, average. Unbiased: its
    expectation over the drops is the uniform soup."""
    if not 0 <= drop_rate < 1:
        raise ValueError(f"DARE drop rate {drop_rate} is not in [0, 1)")

    def merge(key: str) -> torch.Tensor:
        stacked = updates(ingredients, base, key)
        keep = torch.rand(stacked.shape, generator=generator) >= drop_rate
        return base[key] + (stacked * keep / (1 - drop_rate)).mean(0)

    return _merged(ingredients, merge)


def fisher_merge(ingredients: Sequence[StateDict], fishers: Sequence[StateDict]) -> StateDict:
    """Fisher-weighted average; tensors without a Fisher (buffers) and entries where every
    Fisher is zero get the plain mean."""

    def merge(key: str) -> torch.Tensor:
        stacked = torch.stack([ingredient[key] for ingredient in ingredients])
        if any(key not in fisher for fisher in fishers):
            return stacked.mean(0)
        weights = torch.stack([fisher[key] for fisher in fishers])
        total = weights.sum(0)
        weighted = (weights * stacked).sum(0) / total.clamp(min=torch.finfo(total.dtype).tiny)
        return torch.where(total > 0, weighted, stacked.mean(0))

    return _merged(ingredients, merge)


Batches = Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor]]]
Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# How a model's outputs are obtained from a batch: `forward(call, inputs, targets)` returns
# (outputs, targets), as a task's `forward` does (teacher forcing for translation, tasks.py);
# plain `call(inputs)` by default.
Forward = Callable[[Callable[..., torch.Tensor], torch.Tensor, torch.Tensor], tuple]


def _plain_forward(call: Callable, inputs: torch.Tensor, targets: torch.Tensor) -> tuple:
    return call(inputs), targets


def diagonal_fisher(
    model: torch.nn.Module,
    state: StateDict,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    loss: Loss,
    forward: Forward = _plain_forward,
) -> StateDict:
    """The empirical diagonal Fisher of `state` for each parameter: the mean over examples
    of the squared gradient of the example's loss at its true label (Matena & Raffel use
    the same estimate in their released code's "empirical" mode). Per-example gradients by
    `torch.func.vmap`, the model in eval mode (BatchNorm uses its running statistics).
    Pruned weights get a Fisher too; they are zero in every ingredient, so their merge is."""
    from torch.func import functional_call, grad, vmap

    names = {name for name, _ in model.named_parameters()}
    params = {key: value for key, value in state.items() if key in names}
    buffers = {key: value for key, value in state.items() if key not in names}
    model.eval()

    def example_loss(weights: StateDict, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        def call(*batch: torch.Tensor) -> torch.Tensor:
            return functional_call(model, {**weights, **buffers}, batch)

        return loss(*forward(call, inputs[None], targets[None]))

    per_example = vmap(grad(example_loss), in_dims=(None, 0, 0))
    totals = {key: torch.zeros_like(value) for key, value in params.items()}
    count = 0
    for inputs, targets in batches:
        for key, squares in per_example(params, inputs, targets).items():
            totals[key] += squares.pow(2).sum(0)
        count += len(targets)
    return {key: total / max(1, count) for key, total in totals.items()}


def learned_soup(
    model: torch.nn.Module,
    ingredients: Sequence[StateDict],
    batches: Batches,
    loss: Loss,
    *,
    per_layer: bool = False,
    epochs: int = 5,
    lr: float = 0.05,
    seed: int = 0,
    forward: Forward = _plain_forward,
) -> tuple[StateDict, torch.Tensor, list[float]]:
    """Learned soup (Wortsman et al., 2022): mixing coefficients softmax(a), one per
    ingredient or per ingredient and parameter tensor (`per_layer`), fitted with AdamW on
    the loss over `batches()` (validation data), the model evaluated functionally with the
    mixed weights. Returns the soup, the coefficients (k, or k x tensors) and the mean loss
    per epoch (its history). A convex combination of ingredients that share a mask keeps
    it. BatchNorm statistics are the mixed running statistics: recalibrate afterwards."""
    from torch.func import functional_call

    keys = [key for key, value in ingredients[0].items() if value.is_floating_point()]
    stacked = {key: torch.stack([ingredient[key] for ingredient in ingredients]) for key in keys}
    generator = torch.Generator().manual_seed(seed)
    shape = (len(ingredients), len(keys)) if per_layer else (len(ingredients), 1)
    logits = (1e-3 * torch.randn(shape, generator=generator)).requires_grad_()
    optimizer = torch.optim.AdamW([logits], lr=lr, weight_decay=0.0)

    parameters = {name for name, _ in model.named_parameters()}

    def mixed(weights: torch.Tensor) -> StateDict:
        """The mixed state; buffers (BatchNorm statistics) are mixed too, without gradient."""
        return {
            key: torch.tensordot(
                (weights if key in parameters else weights.detach())[:, min(j, weights.shape[1] - 1)],
                stacked[key],
                dims=1,
            )
            for j, key in enumerate(keys)
        }

    history = []
    model.eval()  # BatchNorm uses the mixed running statistics, dropout is off
    for _ in range(epochs):
        total, count = 0.0, 0
        for inputs, targets in batches():
            weights = mixed(logits.softmax(0))

            def call(*batch: torch.Tensor, weights: StateDict = weights) -> torch.Tensor:
                return functional_call(model, weights, batch, strict=False)

            batch_loss = loss(*forward(call, inputs, targets))
            optimizer.zero_grad()
            batch_loss.backward()
            optimizer.step()
            total, count = total + float(batch_loss.detach()) * len(targets), count + len(targets)
        history.append(total / max(1, count))
    with torch.no_grad():
        weights = logits.softmax(0)
        soup = dict(ingredients[0]) | mixed(weights)
    coefficients = weights if per_layer else weights[:, 0]
    return {key: value.detach().clone() for key, value in soup.items()}, coefficients.detach(), history
