"""The Faust face of flowgraph: `App`, topics, agents, tables, timers.

``import flowgraph as faust`` runs a Faust program: `App` builds the same logical graph as
`fg.Graph`, with each agent a planner-visible step. See docs/how-to/coming-from-faust.md.
"""

from flowgraph.app._app import Agent as Agent
from flowgraph.app._app import App as App
from flowgraph.app._app import Topic as Topic
from flowgraph.app._stream import AgentStream as AgentStream
from flowgraph.app._stream import Event as Event
from flowgraph.app._stream import current_event as current_event
from flowgraph.app._table import GlobalTable as GlobalTable
from flowgraph.app._table import Table as Table

__all__ = ["Agent", "AgentStream", "App", "Event", "GlobalTable", "Table", "Topic", "current_event"]
