"""Planner passes: one pure function per module, named like the module."""

from planner.passes.assign_stores import assign_stores as assign_stores
from planner.passes.assign_topics import assign_topics as assign_topics
from planner.passes.fuse import fuse as fuse
from planner.passes.insert_repartitions import insert_repartitions as insert_repartitions
from planner.passes.mark_unread_keys import mark_unread_keys as mark_unread_keys
from planner.passes.split_subtopologies import split_subtopologies as split_subtopologies
from planner.passes.validate import validate as validate

__all__ = [
    "assign_stores",
    "assign_topics",
    "fuse",
    "insert_repartitions",
    "mark_unread_keys",
    "split_subtopologies",
    "validate",
]
