"""Timers, crontabs and tasks of an app, run beside the records (not built yet)."""

from __future__ import annotations

__all__ = ["check_cron"]


def check_cron(cron: str) -> None:
    """Raise ConfigurationError unless `cron` is a five-field schedule."""
