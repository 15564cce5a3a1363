"""Record uses that mypy must accept (checked by tests/unit/flowgraph/test_records.py)."""

from __future__ import annotations

import datetime as dt

import attrs

from flowgraph.records import Record


class Item(Record):
    name: str
    price: float = 0.0


class Click(Record):
    url: str
    ts: float
    referrer: str | None = None
    tags: list[str] = attrs.field(factory=list)
    items: list[Item] = []
    when: dt.datetime | None = None


class Sub(Click):
    extra: int = 0


class Key(Record, frozen=True):
    user: str


class Late(Click, kw_only=True):
    required: int


click = Click("https://a", 1.0)
click2 = Click(url="https://a", ts=1.0, referrer="r", tags=["x"], items=[Item("i", 2.0)])
sub = Sub("https://a", 1.0, extra=2)
late = Late("https://a", 1.0, required=3)
url: str = click.url
click.referrer = None
decoded: Click = Click.decode(click.encode())
restored: Sub = Sub.from_dict(sub.to_dict())
counts: dict[Key, int] = {Key("bob"): 1}
