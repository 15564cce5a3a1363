"""Draw the plan pictures of the docs, docs/images/<name>.svg, from the docs' own examples.

Each picture is what ``flowgraph explain app.py:graph --format svg`` draws for one example
graph below: the same renderer (`flowgraph.viz.physical_svg`), and the graph built from the
same lines as the example in the page that shows it, run as a module ``app`` in a file
``app.py``, so the function names and lines in the picture's tooltips match the page's
``explain`` excerpts. tests/unit/test_doc_pictures.py fails when a committed picture differs
from what this script draws now, or when an example's lines are no longer in its page: after
changing an example, the planner or planner/draw.py, run

    python tools/doc_pictures.py            # rewrite docs/images/*.svg
    python tools/doc_pictures.py --text NAME  # print the explain text of one example
"""

from __future__ import annotations

import argparse
import sys
import types
from pathlib import Path

import attrs

import flowgraph as fg
from flowgraph import viz

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT / "docs" / "images"


@attrs.frozen
class Example:
    """A graph drawn for the docs: built by `source` (which makes one `Graph`), shown in `page`.

    Every line of `source` is a line of `page` (the test checks it), so the picture shows
    the page's own example."""

    page: str
    source: str


EXAMPLES: dict[str, Example] = {
    "join-stream-table": Example(
        "docs/concepts/joins.md",
        """\
import flowgraph as fg

g = fg.Graph("shop")
prices = g.source("prices", key_type=str, value_type=int, partitions=3).to_table(name="price")


def item(order: dict) -> str:
    return order["item"]


def priced(order: dict, price: int | None) -> dict:
    return {**order, "price": price}


orders = g.source("orders", key_type=str, value_type="json", partitions=2)
orders.key_by(item).join(prices, priced, how="left").to("priced-orders", value_type="json")
""",
    ),
    "join-global-table": Example(
        "docs/concepts/joins.md",
        """\
import flowgraph as fg

g = fg.Graph("clicks")
users = g.global_table("users", key_type=str, value_type=str, partitions=3)
clicks = g.source("clicks", key_type=str, value_type="json", partitions=2)
clicks.join(
    users,
    lambda click, country: f"{click['url']} from {country}",
    key=lambda click: click["user"],
    name="with_country",
    value_type=str,
).to("clicks-by-country")
""",
    ),
    "join-table-table": Example(
        "docs/concepts/joins.md",
        """\
import flowgraph as fg

g = fg.Graph("loyalty")
users = g.source("users", key_type=str, value_type=str, partitions=2).to_table(name="user")
spent = g.source("payments", key_type=str, value_type=int, partitions=2).sum(name="spent")


def profile(name: str | None, total: int | None) -> str:
    return f"{name} spent {total}"


users.join(spent, profile, how="left", value_type=str)
""",
    ),
    "join-stream-stream": Example(
        "docs/concepts/joins.md",
        """\
import flowgraph as fg

g = fg.Graph("ads")
impressions = g.source("impressions", key_type=str, value_type=str, partitions=2)
clicks = g.source("clicks", key_type=str, value_type="json", partitions=3)


def ad(click: dict) -> str:
    return click["ad"]


def attributed(impression: str, click: dict | None) -> str:
    return f"{impression} clicked by {click['user']}" if click else f"{impression} not clicked"


shown = impressions.join(clicks.key_by(ad), attributed, within=10, grace=2, how="left")
shown.to("attributed", value_type=str)
""",
    ),
    "session-count": Example(
        "docs/concepts/windows.md",
        """\
import flowgraph as fg

g = fg.Graph("sessions")
clicks = g.source("clicks", key_type=str, value_type=int)
visits = clicks.window(fg.Session(10, grace=30)).count(name="visits")
updates = []
visits.changes().to(lambda k, v: updates.append((k, v)), name="collect")
""",
    ),
    "enrich-clicks": Example(
        "docs/how-to/enrichment.md",
        """\
import flowgraph as fg


class Click(fg.Record):
    user: str
    url: str


class Profile(fg.Record):
    name: str
    country: str


class EnrichedClick(fg.Record):
    user: str
    url: str
    country: str


def with_country(click: Click, profile: Profile | None) -> EnrichedClick:
    country = "unknown" if profile is None else profile.country
    return EnrichedClick(user=click.user, url=click.url, country=country)


def user_of(click: Click) -> str:
    return click.user


graph = fg.Graph("enrich")
profiles = graph.source("profiles", key_type=str, value_type=Profile, partitions=4)
profile_table = profiles.to_table(name="profile")
clicks = graph.source("clicks", key_type=str, value_type=Click, partitions=4)
clicks.key_by(user_of).join(profile_table, with_country, how="left").to("enriched-clicks")
""",
    ),
}


def build(name: str) -> fg.Graph:
    """Run example `name` as the module ``app`` of file ``app.py`` and return its graph."""
    module = types.ModuleType("app")
    module.__file__ = "app.py"
    exec(compile(EXAMPLES[name].source, "app.py", "exec"), module.__dict__)
    graphs = {id(v): v for v in module.__dict__.values() if isinstance(v, fg.Graph)}
    if len(graphs) != 1:
        msg = f"example {name!r} makes {len(graphs)} graphs; it must make one"
        raise ValueError(msg)
    return next(iter(graphs.values()))


def pictures() -> dict[str, str]:
    """The SVG of every example, by name: what `main` writes to docs/images/<name>.svg."""
    return {name: viz.physical_svg(build(name)) for name in EXAMPLES}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--text", metavar="NAME", choices=sorted(EXAMPLES), help="print explain")
    args = parser.parse_args(argv)
    if args.text:
        print(build(args.text).explain())
        return 0
    IMAGES.mkdir(parents=True, exist_ok=True)
    drawn = pictures()
    for name, svg in drawn.items():
        path = IMAGES / f"{name}.svg"
        if not path.exists() or path.read_text(encoding="utf-8") != svg:
            path.write_text(svg, encoding="utf-8")
            print(f"wrote {path.relative_to(ROOT)}")
    for path in sorted(IMAGES.glob("*.svg")):
        if path.stem not in drawn:
            print(f"{path.relative_to(ROOT)} is drawn by no example: delete it", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
