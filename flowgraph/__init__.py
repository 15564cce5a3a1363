"""flowgraph: stream processing in plain Python.

Compose functions into a `Graph`; the planner turns it into topics and stores; `run` executes
it embedded (``memory://``) or on Kafka. See docs/getting-started/.
"""

from flowgraph import testing as testing
from flowgraph._context import RecordContext as RecordContext
from flowgraph._delete import DELETE as DELETE
from flowgraph._global_table import GlobalTable as GlobalTable
from flowgraph._graph import Graph as Graph
from flowgraph._graph import Stream as Stream
from flowgraph._graph import Table as Table
from flowgraph._run import RunResult as RunResult
from flowgraph._run import run as run
from flowgraph._run import run_async as run_async
from flowgraph._windowed import WindowedStream as WindowedStream
from flowgraph._windowed import WindowedTable as WindowedTable
from flowgraph.app import App as App
from flowgraph.app import current_event as current_event
from flowgraph.errors import ConfigurationError as ConfigurationError
from flowgraph.errors import DeadLetterLimitError as DeadLetterLimitError
from flowgraph.errors import FlowgraphError as FlowgraphError
from flowgraph.errors import GraphDefinitionError as GraphDefinitionError
from flowgraph.errors import GraphValidationError as GraphValidationError
from flowgraph.errors import GroupStalledError as GroupStalledError
from flowgraph.errors import PlanningError as PlanningError
from flowgraph.errors import RuntimeFailure as RuntimeFailure
from flowgraph.errors import SerializationError as SerializationError
from flowgraph.records import Record as Record
from flowgraph.runtime.window_views import WindowedTableView as WindowedTableView
from flowgraph.runtime.window_views import WindowSet as WindowSet
from flowgraph.runtime.worker import Worker as Worker
from flowgraph.windows import Hopping as Hopping
from flowgraph.windows import Session as Session
from flowgraph.windows import Sliding as Sliding
from flowgraph.windows import Tumbling as Tumbling
from flowgraph.windows import WindowKey as WindowKey
from planner import Plan as Plan
from planner import plan as plan

__all__ = [  # noqa: RUF022 - plain sorted() order, which the API test pins
    "App",
    "ConfigurationError",
    "DELETE",
    "DeadLetterLimitError",
    "FlowgraphError",
    "GlobalTable",
    "Graph",
    "GraphDefinitionError",
    "GraphValidationError",
    "GroupStalledError",
    "Hopping",
    "Plan",
    "PlanningError",
    "Record",
    "RecordContext",
    "RunResult",
    "RuntimeFailure",
    "SerializationError",
    "Session",
    "Sliding",
    "Stream",
    "Table",
    "Tumbling",
    "WindowKey",
    "WindowSet",
    "WindowedStream",
    "WindowedTable",
    "WindowedTableView",
    "Worker",
    "current_event",
    "plan",
    "run",
    "run_async",
    "testing",
]
