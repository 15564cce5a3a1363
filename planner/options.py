"""Switches for optional planner behaviour, as one frozen value (not kwargs on `plan()`)."""

from __future__ import annotations

import attrs

__all__ = ["PlanOptions"]


@attrs.frozen(kw_only=True)
class PlanOptions:
    """Options every pass can read; defaults are what production runs use."""

    fuse: bool = True
    """Group stateless runs into one task; off shows one task per step (debugging)."""
    check_invariants: bool = False
    """Run `validate_invariants` after every pass (tests and ``--debug``)."""
