"""What a checkpoint's `meta`, and the metrics file written from it, say about a model.

Every method writes its models' identity the same way, and the report reads it back with
`ModelRecord.from_meta`, so both sides agree on the fields and their types.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# What made a model: one per method step (see methods/).
KINDS = (
    "dense", "ingredient", "soup", "ensemble", "lottery_pools", "gmp", "gmp_prefix",
    "gmp_sms_ingredient", "gmp_sms_round", "rewind",
)  # fmt: skip
REQUIRED_METRICS = ("sparsity", "test_accuracy", "validation_accuracy", "checkpoint_sha256")


@dataclass(frozen=True)
class ModelRecord:
    """A model's identity (experiment, seed, directory in the run, kind, phase) and the
    facts its method adds (`details`: lineage, recipe, ingredients, ..., in recorded order)."""

    experiment: str
    seed: int
    model_dir: str
    kind: str
    details: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"model kind '{self.kind}' is none of {KINDS}")

    @property
    def phase(self) -> int:
        return self.details["phase"]

    def to_meta(self) -> dict[str, Any]:
        return {
            "experiment": self.experiment, "seed": self.seed, "model_dir": self.model_dir,
            "kind": self.kind, **self.details,
        }  # fmt: skip

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any]) -> ModelRecord:
        identity = ("experiment", "seed", "model_dir", "kind")
        missing = [key for key in (*identity, "phase") if key not in meta]
        if missing:
            raise ValueError(f"lacks the fields {missing}")
        details = {key: value for key, value in meta.items() if key not in identity}
        return cls(meta["experiment"], meta["seed"], meta["model_dir"], meta["kind"], details)


def total_budget(metas: Any) -> int | float | None:
    """Training epochs that went into a merged model: the sum over what it merges (the
    compute spent, including greedy's unused ingredients); None if any is unknown."""
    budgets = [meta.get("budget_epochs") for meta in metas]
    return None if any(b is None for b in budgets) else sum(budgets)
