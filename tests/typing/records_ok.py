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


class Order(Record, include_metadata=True, namespace="shop.Order"):
    account_id: str
    amount: float = 1.0


class Checked(Record, validation=True, serializer="json", isodates=True, decimals=True):
    account_id: str


order = Order(account_id="a", amount=3)
fields: dict[str, object] = order.asdict()
representation: dict[str, object] = order.to_representation()
payload: bytes = order.dumps()
payload = order.dumps(serializer="json")
loaded: Order = Order.loads(payload)
loaded = Order.loads(payload.decode(), serializer="json")
from_data: Order = Order.from_data({"account_id": "a"})
checked = Checked("a")
