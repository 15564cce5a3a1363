"""Record uses that mypy must reject: each line marked `# error` must be reported."""

from __future__ import annotations

from flowgraph.records import Record


class Click(Record):
    url: str
    ts: float
    referrer: str | None = None


class Key(Record, frozen=True):
    user: str


Click(1, 1.0)  # error
Click("https://a")  # error
Click("https://a", 1.0, nope=1)  # error
Click("https://a", 1.0).url = 3  # error
Key("bob").user = "alice"  # error
wrong: int = Click.decode(b"{}")  # error


class Order(Record, include_metadata=True, namespace="shop.Order"):
    account_id: str
    amount: float = 1.0


class Loud(Record, include_metadata="yes"):  # error
    x: int


Order(account_id=1)  # error
Order("a").amount = "lots"  # error
not_bytes: str = Order("a").dumps()  # error
not_order: Click = Order.loads(b"{}")  # error
from_data: Click = Order.from_data({})  # error
