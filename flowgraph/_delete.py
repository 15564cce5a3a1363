"""`DELETE`: what an aggregation function returns to delete its key from the table."""

from __future__ import annotations

from typing import Any, Final, final

__all__ = ["DELETE", "Delete"]


@final
class Delete:
    """The type of `DELETE`; there is one instance, so ``result is fg.DELETE`` tests for it.

    Inside a store it also marks a deleted key's entry, which keeps the key's position so that
    a replay after a crash does not apply the records before the delete again.
    """

    __slots__ = ()
    _instance: Delete | None = None

    def __new__(cls) -> Delete:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "fg.DELETE"

    def __reduce__(self) -> str:
        return "DELETE"  # pickles and copies as the module's one instance

    def __copy__(self) -> Delete:
        return self

    def __deepcopy__(self, memo: Any) -> Delete:
        return self

    def __add__(self, other: object) -> Any:
        # a `sum` function returned fg.DELETE: acc + DELETE lands here (int defers to it)
        msg = (
            "fg.DELETE cannot be added to a sum; a sum's function gives a number to add, "
            "not a decision to delete; use .aggregate(0, fn) and return fg.DELETE from fn"
        )
        raise TypeError(msg)

    __radd__ = __add__


DELETE: Final = Delete()
"""Return it from an `aggregate` or `reduce` function to delete the key; the next record of
the key starts again from the initial value."""
