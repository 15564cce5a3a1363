"""The ``flowgraph`` command: ``flowgraph run TARGET`` and ``flowgraph explain TARGET``.

The CLI stays thin: `locate_graph` finds the graph, the planner plans it, `fg.run` runs it.
A target names a graph in a module or a file, optionally through a factory::

    flowgraph run pkg.jobs:graph
    flowgraph run path/to/job.py:graph          (":graph" may be left out)
    flowgraph run "pkg.jobs:make_graph(env='dev')"
    flowgraph explain pkg.jobs:graph --stage partitioned --format svg > graph.svg

Mistakes in the target or the options are one sentence on stderr and exit code 2: a module
that does not exist is told apart from one that fails while importing (as bytewax and Flask
do), and a factory called with the wrong arguments from one that raises inside. A graph that
fails validation prints every problem, also with exit code 2; any other flowgraph error while
running exits with 1 (a state store that cannot be written, found at start, is a setup
mistake: 2). An ``--until-idle`` run whose consumer group cannot finish prints its summary and
one sentence saying what is left, and exits with 3. A run stopped by ``--max-dead-letters``
prints its summary and one sentence, and exits with 1. Ctrl-C or SIGTERM stops a running
worker cleanly (exit 0); one still starting (connecting, joining), one that does not stop within a
few seconds (a long restore, a batch that hangs), or a second signal exits with 130.
``--debug`` adds the traceback.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import inspect
import logging
import os
import re
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from flowgraph._graph import Graph
from flowgraph._input_files import FORMATS
from flowgraph.app import App
from flowgraph.errors import (
    ConfigurationError,
    DeadLetterLimitError,
    FlowgraphError,
    GraphDefinitionError,
    GroupStalledError,
    Interrupted,
)

__all__ = ["TargetError", "locate_graph", "main"]

DEFAULT_ATTRIBUTE = "graph"
DEFAULT_STORE = "rocksdb://.flowgraph"
"""The attribute a target without ``:attr`` names."""
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNFINISHED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

_DRIVE = re.compile(r"^[A-Za-z]:[\\/]")  # C:\jobs\clicks.py:graph keeps its drive letter
_TARGET_FORMS = (
    "use 'pkg.module:graph', 'path/to/file.py:graph' or \"pkg.module:make_graph(env='dev')\""
)


class TargetError(ConfigurationError):
    """A CLI target that does not lead to a graph; the message says why in one sentence."""


# -- locating the graph ------------------------------------------------------------------------


def locate_graph(target: str) -> Graph | App:
    """The `Graph` or `App` that `target` names.

    `target` is ``MODULE[:EXPR]``. MODULE is a dotted module name (looked up from the current
    directory first) or a path to a ``.py`` file; EXPR is an attribute (``graph``,
    ``jobs.graph``) or a call of one with literal arguments (``make_graph(env='dev')``) and
    defaults to ``graph`` (or ``app``, when the module has that and no ``graph``). An
    attribute that is a function is called with no arguments. The result must be a
    `flowgraph.Graph` or a `flowgraph.App`.

    Raises:
        TargetError: the module or attribute is missing, the module raised while importing,
            the factory raised or was called with wrong arguments, or the result is no graph.
    """
    module_part, expr = _split(target)
    names, args, kwargs, explicit_call = _parse_expr(expr, target)
    if _is_path(module_part):
        module = _import_file(module_part)
        where = f"file {module_part!r}"
    else:
        module = _import_module(module_part)
        where = f"module {module_part!r}"
    obj: Any = module
    if (
        names == ["graph"]
        and not hasattr(module, "graph")
        and isinstance(getattr(module, "app", None), App)
    ):
        names = ["app"]  # a Faust-style module: its App is called app
    for i, name in enumerate(names):
        try:
            obj = getattr(obj, name)
        except AttributeError:
            dotted = ".".join(names[: i + 1])
            msg = f"{where} has no attribute {dotted!r}; {_graphs_hint(module)}"
            raise TargetError(msg) from None
    shown = f"{module_part}:{'.'.join(names)}"
    what = "is"
    if explicit_call:
        obj = _call(obj, args, kwargs, shown, expr)
        shown, what = f"{module_part}:{expr}", "returned"
    elif not isinstance(obj, Graph | App) and callable(obj) and not isinstance(obj, type):
        obj = _call(obj, (), {}, shown, f"{'.'.join(names)}()")
        what = "returned"
    if not isinstance(obj, Graph | App):
        kind = "None" if obj is None else _a(type(obj).__name__)
        msg = (
            f"{shown} {what} {kind}, not a flowgraph Graph or App; point the target at a "
            "fg.Graph, a fg.App, or a function that returns one"
        )
        raise TargetError(msg)
    return obj


def _split(target: str) -> tuple[str, str]:
    start = 2 if _DRIVE.match(target) else 0
    colon = target.find(":", start)
    module_part, expr = (
        (target, DEFAULT_ATTRIBUTE) if colon < 0 else (target[:colon], target[colon + 1 :])
    )
    if not module_part.strip() or not expr.strip():
        msg = f"target {target!r} does not name a module and a graph; {_TARGET_FORMS}"
        raise TargetError(msg)
    return module_part.strip(), expr.strip()


def _parse_expr(expr: str, target: str) -> tuple[list[str], tuple[Any, ...], dict[str, Any], bool]:
    """Attribute path, literal call arguments, and whether `expr` is a call."""
    bad = (
        f"cannot read {expr!r} in target {target!r} as an attribute or as a call with literal "
        f"arguments; {_TARGET_FORMS}"
    )
    try:
        node = ast.parse(expr, mode="eval").body
    except SyntaxError:
        raise TargetError(bad) from None
    call = isinstance(node, ast.Call)
    func = node.func if isinstance(node, ast.Call) else node
    names: list[str] = []
    while isinstance(func, ast.Attribute):
        names.insert(0, func.attr)
        func = func.value
    if not isinstance(func, ast.Name):
        raise TargetError(bad)
    names.insert(0, func.id)
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    if isinstance(node, ast.Call):
        try:
            for arg in node.args:
                if isinstance(arg, ast.Starred):
                    raise ValueError(arg)
                args.append(ast.literal_eval(arg))
            for kw in node.keywords:
                if kw.arg is None:  # **kwargs
                    raise ValueError(kw)
                kwargs[kw.arg] = ast.literal_eval(kw.value)
        except ValueError:
            raise TargetError(bad) from None
    return names, tuple(args), kwargs, call


def _is_path(module_part: str) -> bool:
    return module_part.endswith(".py") or "/" in module_part or os.sep in module_part


def _import_file(path: str) -> Any:
    """Import a ``.py`` file as a module, its package root on `sys.path` (like Flask's CLI)."""
    real = os.path.realpath(path)
    if not os.path.isfile(real):
        msg = f"file {path!r} does not exist; check the path (relative to {os.getcwd()!r})"
        raise TargetError(msg)
    stem, ext = os.path.splitext(real)
    if ext != ".py":
        msg = f"file {path!r} is not a Python file; {_TARGET_FORMS}"
        raise TargetError(msg)
    if os.path.basename(stem) == "__init__":
        stem = os.path.dirname(stem)
    parts: list[str] = []
    directory = stem
    while True:  # walk up out of the package, so relative imports inside it work
        directory, name = os.path.split(directory)
        parts.insert(0, name)
        if not os.path.isfile(os.path.join(directory, "__init__.py")):
            break
    if sys.path[0] != directory:
        sys.path.insert(0, directory)
    name = ".".join(parts)
    module = _import_module(name, shown=f"file {path!r}", from_cwd=False)
    found = os.path.realpath(getattr(module, "__file__", None) or "")
    if found not in (real, os.path.join(real, "__init__.py")):
        msg = (
            f"file {path!r} is hidden by the module {name!r} already importable from "
            f"{found or 'a built-in'!r}; rename the file"
        )
        raise TargetError(msg)
    return module


def _import_module(name: str, *, shown: str | None = None, from_cwd: bool = True) -> Any:
    shown = shown or f"module {name!r}"
    if from_cwd and "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, "")  # console scripts do not look in the current directory
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (name == exc.name or name.startswith(exc.name + ".")):
            msg = (
                f"no module named {name!r} (looked in the current directory and sys.path); "
                "check the name, or give a file path like path/to/job.py:graph"
            )
            raise TargetError(msg) from None
        raise _while_importing(shown, exc) from exc
    except Exception as exc:
        raise _while_importing(shown, exc) from exc


def _while_importing(shown: str, exc: Exception) -> TargetError:
    msg = f"importing {shown} raised {_error(exc)}; fix it, or run with --debug to see where"
    return TargetError(msg)


def _call(obj: Any, args: tuple[Any, ...], kwargs: dict[str, Any], shown: str, written: str) -> Any:
    if not callable(obj):
        msg = f"{shown} is {_a(type(obj).__name__)}, which cannot be called as {written!r}"
        raise TargetError(msg)
    try:
        inspect.signature(obj).bind(*args, **kwargs)
    except TypeError as exc:
        msg = f"{shown} cannot be called as {written!r}: {exc}"
        raise TargetError(msg) from None
    except ValueError:
        pass  # no signature to check (some builtins): just call it
    try:
        return obj(*args, **kwargs)
    except Exception as exc:
        msg = f"factory {shown} raised {_error(exc)}; fix it, or run with --debug to see where"
        raise TargetError(msg) from exc


def _graphs_hint(module: Any) -> str:
    found = sorted(n for n, v in vars(module).items() if isinstance(v, Graph | App))
    if found:
        return "graphs defined there: " + ", ".join(map(repr, found))
    return "it defines no fg.Graph at module level; name the graph or a function returning one"


def _error(exc: BaseException) -> str:
    text = " ".join(str(exc).split())  # one line, whatever the exception's message holds
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _a(noun: str) -> str:
    return f"an {noun}" if noun[:1].lower() in "aeiou" else f"a {noun}"


# -- commands ----------------------------------------------------------------------------------


def _cmd_run(args: argparse.Namespace) -> int:
    import flowgraph as fg
    from flowgraph._live import LiveView, summary
    from flowgraph._run import DEAD_LETTER_DIR
    from flowgraph.runtime import faults

    if args.stall_timeout is not None and not args.until_idle:
        msg = "--stall-timeout applies only with --until-idle; add --until-idle or drop it"
        raise ConfigurationError(msg)
    target = locate_graph(args.target)
    plan = target.plan()
    args.app_broker = args.broker is None and getattr(target, "broker", None) is not None
    if args.broker is None:  # an App names its broker and store, as in Faust
        args.broker = getattr(target, "broker", None) or "memory://"
    if args.store is None:
        args.store = getattr(target, "store", None) or DEFAULT_STORE
    dead_letters = args.dead_letters
    if dead_letters is None and _scheme(args.broker) == _scheme(args.store) == "memory":
        # nothing of this run outlives it but what it writes to a file
        dead_letters = os.path.join(DEAD_LETTER_DIR, f"{plan.graph_id}.jsonl")
    on_start, close_windows = _inputs(args, plan)
    view = LiveView(plan)

    def started(worker: Any) -> None:
        on_start(worker)
        view.started(worker)

    try:
        result = fg.run(
            plan,
            broker=args.broker,
            store=args.store,
            until_idle=True if args.until_idle or args.input else None,
            end_of_input=close_windows,
            max_events=args.max_events,
            commit_every=args.commit_every,
            commit_interval=args.commit_interval,
            max_batch=args.max_batch,
            max_skew=args.max_skew,
            max_idle=args.max_idle,
            on_worker=view.attach,
            on_start=started,
            crash_point=faults.from_env(os.environ),
            stall_timeout=args.stall_timeout,
            max_dead_letters=args.max_dead_letters,
            dead_letters_file=dead_letters,
            waiting_report=args.report_after,
            kafka_config=args.kafka_config,
            create_topics=True if args.create_topics else None,
        )
    except GroupStalledError as exc:
        view.close()
        if exc.result is not None:
            _write(summary(exc.result, plan))
        return _fail(exc, EXIT_UNFINISHED, args.debug)
    except DeadLetterLimitError as exc:
        view.close()
        if exc.result is not None:
            _write(summary(exc.result, plan))
        if args.debug:
            traceback.print_exception(exc)
        print(f"flowgraph: error: {exc.sentence('--max-dead-letters ')}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        view.close()
    _write(summary(result, plan))
    return EXIT_OK


def _inputs(args: argparse.Namespace, plan: Any) -> tuple[Callable[[Any], None], bool | None]:
    """What ``--input`` files hand the run (read and checked now, appended once it has
    started), and whether the run closes its windows at the end of its input."""
    close: bool | None = args.close_windows
    if close and not (args.until_idle or args.input or args.broker.startswith("memory:")):
        msg = "--close-windows applies when an until-idle run ends; add --until-idle"
        raise ConfigurationError(msg)
    if not args.input:
        return (lambda worker: None), close
    if args.broker != "memory://":
        if getattr(args, "app_broker", False):
            fix = f"the app names broker={args.broker!r}; pass --broker memory://"
        else:
            fix = f"not {args.broker!r}; drop --broker"
        msg = (
            f"--input feeds the embedded broker (memory://), {fix}, or write the records "
            "to the topic with a Kafka producer"
        )
        raise ConfigurationError(msg)
    from flowgraph._input_files import read_inputs
    from flowgraph.runtime.codecs import topic_codecs

    records = read_inputs(plan, args.input, topic_codecs(plan, in_process=True), args.input_format)

    def append(worker: Any) -> None:
        for topic, recs in records.items():
            worker.transport.broker.append(topic, recs)

    return append, True if close is None else close


def _cmd_explain(args: argparse.Namespace) -> int:
    from planner import Stage, plan_until, to_text
    from planner.physical import PhysicalPlan

    staged = plan_until(locate_graph(args.target), Stage(args.stage))
    if args.format == "text":
        _write(to_text(staged))
        return EXIT_OK
    try:
        from flowgraph import viz
    except ImportError as exc:
        msg = f"--format {args.format} needs flowgraph.viz, which fails to import: {_error(exc)}"
        raise FlowgraphError(msg) from exc
    if args.format == "json":
        _write(viz.to_json(staged))
    elif isinstance(staged, PhysicalPlan):
        _write(viz.physical_svg(staged))
    else:
        _write(viz.logical_svg(staged))
    return EXIT_OK


def _write(text: str) -> None:
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    sys.stdout.flush()


# -- arguments ---------------------------------------------------------------------------------


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        msg = f"expected a positive integer, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def _seconds(text: str, *, positive: bool = False) -> float:
    """A number of seconds >= 0 (> 0 if `positive`), or a usage error."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (value > 0 if positive else value >= 0):  # also refuses nan
        what = "a positive number of seconds" if positive else "a number of seconds >= 0"
        msg = f"expected {what}, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def _scheme(url: str) -> str:
    return url.partition("://")[0].lower()


def _dead_letter_arg(text: str) -> int | float:
    """A count of dead letters (an int >= 0) or a fraction of source records in (0, 1)."""
    value: int | float
    try:
        value = int(text) if text.strip().isdigit() else float(text)
    except ValueError:
        value = -1.0
    if isinstance(value, float) and not 0.0 < value < 1.0:  # also refuses nan
        msg = (
            "expected a count (like 100) or a fraction of the source records between 0 and 1 "
            f"(like 0.01), got {text!r}"
        )
        raise argparse.ArgumentTypeError(msg)
    return value


def _positive_seconds(text: str) -> float:
    """A timeout: a number of seconds > 0, or a usage error."""
    return _seconds(text, positive=True)


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "target",
        metavar="TARGET",
        help="pkg.module:graph, path/to/file.py:graph, or module:make_graph(...)",
    )
    common.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    parser = argparse.ArgumentParser(
        prog="flowgraph",
        description="Run a flowgraph graph, or explain how it is planned.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser(
        "run",
        parents=[common],
        help="run a graph",
        description="Run a graph until it is idle (memory://, or --until-idle), --max-events, "
        "or Ctrl-C / SIGTERM, which stop it after the current batch with state flushed and "
        "offsets committed.",
    )
    run.add_argument(
        "--broker",
        default=None,
        help="memory:// (embedded, the default; an App's own broker= for an App) or "
        "kafka://host:port[,host:port][?setting=...]",
    )
    run.add_argument(
        "--kafka-config",
        metavar="FILE",
        default=None,
        help="TOML file of kafka:// settings (SASL, SSL, client id, ...); the URL's query and "
        "FLOWGRAPH_KAFKA_* variables win over it (default: $FLOWGRAPH_KAFKA_CONFIG)",
    )
    run.add_argument(
        "--create-topics",
        action="store_true",
        help="create missing source topics with the graph's partitions instead of stopping",
    )
    run.add_argument(
        "--store",
        default=None,
        help="rocksdb://DIR (default: rocksdb://.flowgraph, or an App's own store=) or memory://",
    )
    run.add_argument(
        "--max-events", type=_positive, metavar="N", help="stop after N source records"
    )
    run.add_argument(
        "--commit-every",
        type=_positive,
        metavar="N",
        default=None,
        help="commit after N records at the latest (default 100000)",
    )
    run.add_argument(
        "--commit-interval",
        type=float,
        metavar="SECONDS",
        default=None,
        help="commit after this many seconds at the latest (default 1.0)",
    )
    run.add_argument(
        "--max-batch",
        type=_positive,
        metavar="N",
        default=None,
        help="records fetched per partition at a time (default 2000)",
    )
    run.add_argument(
        "--max-skew",
        type=_seconds,
        metavar="SECONDS",
        default=None,
        help="how far past another partition's next timestamp a run of records may go "
        "(default 0: strict timestamp order; more is faster, but late records become "
        "possible where a window's grace is smaller)",
    )
    run.add_argument(
        "--max-idle",
        type=_seconds,
        metavar="SECONDS",
        default=None,
        help="how long to wait for a partition that is not read to its end before "
        "running the others past it (default 0.5)",
    )
    run.add_argument(
        "--until-idle",
        action="store_true",
        help="stop when the whole group has consumed and committed every input, repartition "
        "topics included (always so on memory://); exit 3 if it cannot finish",
    )
    run.add_argument(
        "--stall-timeout",
        type=_positive_seconds,
        metavar="SECONDS",
        default=None,
        help="with --until-idle, give up (exit 3) after the group made no progress for this "
        "long (default: 3 session timeouts, at least 30)",
    )
    run.add_argument(
        "--max-dead-letters",
        type=_dead_letter_arg,
        metavar="N",
        default=None,
        help="stop (exit 1) once dead letters exceed N (a count), or a fraction of the source "
        "records (like 0.01, judged after 1000 records); what was processed is committed",
    )
    run.add_argument(
        "--dead-letters",
        metavar="FILE",
        default=None,
        help="also append each dead letter to FILE as a JSON line (default with the embedded "
        "broker: DIR/<graph>-dead-letters.jsonl of a rocksdb://DIR store, "
        "flowgraph-dead-letters/<graph>.jsonl with a memory:// store)",
    )
    run.add_argument(
        "--report-after",
        type=_positive_seconds,
        metavar="SECONDS",
        default=None,
        help="say what the worker waits for (no partition, restoring, no records) once it "
        "has waited this long (default 30)",
    )
    run.add_argument(
        "--input",
        action="append",
        default=[],
        metavar="TOPIC=FILE",
        help="feed source topic TOPIC from a JSON-lines FILE ('-': stdin) on the embedded "
        "broker, one record per line; repeatable. The run ends at the end of the files "
        "(--until-idle) and closes its windows",
    )
    run.add_argument(
        "--input-format",
        choices=FORMATS,
        default="values",
        help="values (default): each line is a record's value; records: each line is "
        '{"value": ..., "key": ..., "timestamp": SECONDS}, key and timestamp optional',
    )
    run.add_argument(
        "--close-windows",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="when the run ends idle, close every open window first (emit='close' windows "
        "emit their final values), as at the end of a bounded input; default on for "
        "source_from graphs and with --input, off for topics",
    )
    run.set_defaults(handler=_cmd_run)
    explain = commands.add_parser(
        "explain",
        parents=[common],
        help="describe how a graph is planned",
        description="Print the plan of a graph: sub-topologies, fused steps, topics and stores.",
    )
    explain.add_argument("--format", choices=("text", "json", "svg"), default="text")
    explain.add_argument(
        "--stage",
        choices=("logical", "partitioned", "physical"),
        default="physical",
        help="how far to plan (default: physical)",
    )
    explain.set_defaults(handler=_cmd_explain)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("flowgraph")
    except PackageNotFoundError:
        return "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``flowgraph`` console script; returns the exit code."""
    args = _parser().parse_args(argv)
    if getattr(args, "debug", False):  # errors logged while running (a timer's) get tracebacks
        logging.getLogger("flowgraph").setLevel(logging.DEBUG)
    else:
        # aiokafka logs every failed connection attempt; our own message says it once
        logging.getLogger("aiokafka").addHandler(logging.NullHandler())
        logging.getLogger("aiokafka").propagate = False
        # ...and asyncio logs the errors of aiokafka's own requests still in flight when a
        # worker whose broker went away stops; the run's own error says what matters
        logging.getLogger("asyncio").addHandler(logging.NullHandler())
        logging.getLogger("asyncio").propagate = False
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except (ConfigurationError, GraphDefinitionError) as exc:
        return _fail(exc, EXIT_USAGE, args.debug)
    except Interrupted as exc:  # a signal while starting, or one the run could not wait for
        if args.debug:
            traceback.print_exception(exc)
        print(f"flowgraph: interrupted: {exc}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except FlowgraphError as exc:
        return _fail(exc, EXIT_FAILED, args.debug)
    except KeyboardInterrupt:  # Ctrl-C before the run installed its own handlers
        if args.debug:
            traceback.print_exc()
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `flowgraph explain ... | head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED


def _fail(exc: BaseException, code: int, debug: bool) -> int:
    if debug:
        traceback.print_exception(exc)
    print(f"flowgraph: error: {exc}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
