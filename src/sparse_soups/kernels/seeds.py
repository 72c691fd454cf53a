"""Seeds derived from labels, so every random draw of a run can be named and replayed."""

from __future__ import annotations

import hashlib


def derive_seed(*parts: object) -> int:
    """A stable 63-bit seed from any labels, e.g. (seed, "retrain", phase, ingredient)."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1
