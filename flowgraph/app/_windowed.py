"""Windowed tables (Faust's ``table.tumbling(...)``): not built yet."""

from __future__ import annotations

from typing import Any

__all__ = ["windowed_table"]


def windowed_table(table: Any, kind: str, size: Any, step: Any, expires: Any) -> Any:
    msg = f"windowed tables ({kind}) are not available yet"
    raise NotImplementedError(msg)
