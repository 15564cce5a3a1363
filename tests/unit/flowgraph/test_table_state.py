"""`TableState`: an agent table on one partition, whose writes carry record offsets.

The dict front end (`flowgraph/app/_table.py`) inlines the common write; these tests drive
the state itself, where replays, deletes and reads of uncommitted changes are decided.
"""

from __future__ import annotations

from typing import Any

import pytest

from flowgraph._delete import DELETE
from flowgraph.runtime.state.memory import MemoryBackend
from flowgraph.runtime.table_state import MISSING, TableState
from planner.logical import AgentTable


def state(stored: dict[Any, tuple[int, Any]] | None = None) -> TableState:
    store = MemoryBackend().open("app-counts", 0)
    if stored:
        store.write(dict(stored))
    failed: list[Any] = []
    return TableState(
        AgentTable(id="counts", inputs=("agent",)), store, lambda e, r: failed.append(r)
    )


def test_a_missing_key_reads_missing_and_a_write_reads_back_uncommitted():
    s = state()
    assert s.get("a") is MISSING
    s.set("a", 5, offset=3)
    assert s.get("a") == 5
    assert s.dirty == ["a"]
    assert s.skipped == 0


@pytest.mark.parametrize(("offset", "applied"), [(6, False), (7, False), (8, True)])
def test_a_write_at_or_below_the_stored_offset_is_a_replay(offset: int, applied: bool):
    s = state({"a": (7, 10)})
    s.set("a", 99, offset=offset)
    assert s.get("a") == (99 if applied else 10)
    assert s.skipped == (0 if applied else 1)
    assert s.dirty == (["a"] if applied else [])


def test_one_record_may_write_a_key_many_times_and_it_is_dirty_once():
    s = state({"a": (2, 1)})
    s.set("a", 2, offset=5)
    s.set("a", 3, offset=5)
    s.set("a", 4, offset=6)
    assert s.get("a") == 4
    assert s.dirty == ["a"]
    assert s.flush() == {"a": (6, 4)}
    s.set("a", 5, offset=6)  # flushed: offset 6 is stored now, so this is a replay
    assert s.get("a") == 4
    assert s.skipped == 1


def test_a_delete_is_a_grave_then_gone_for_good():
    s = state({"a": (2, 1), "b": (2, 7)})
    s.set("a", DELETE, offset=4)
    assert s.get("a") is MISSING
    assert s.flush() == {"a": (4, DELETE)}  # the grave keeps the position
    assert s.has_graves
    assert s.flush() == {"a": None}  # the next flush deletes it for good
    assert not s.has_graves


def test_a_replayed_delete_becomes_a_grave_at_the_next_flush():
    s = state({"a": (4, DELETE)})  # a grave an earlier run left
    s.set("a", DELETE, offset=4)  # its deleting record, replayed: skipped
    assert s.skipped == 1
    assert s.replayed == {"a": 4}
    assert s.flush() == {}
    assert s.graves == {"a": 4}
    assert s.flush() == {"a": None}


def test_a_replayed_value_write_on_a_grave_is_not_a_replayed_delete():
    s = state({"a": (4, DELETE)})
    s.set("a", 3, offset=4)
    assert s.replayed == {}
    s.set("a", 3, offset=3)
    assert s.replayed == {}


def test_items_merge_uncommitted_changes_over_the_store_and_hide_deletes():
    s = state({"a": (1, 1), "b": (1, 2), "c": (1, 3)})
    s.set("b", 20, offset=2)
    s.set("c", DELETE, offset=2)
    s.set("d", 4, offset=2)
    assert dict(s.items()) == {"a": 1, "b": 20, "d": 4}
    assert sorted(k for k, _ in s.items()) == ["a", "b", "d"]  # each key once
