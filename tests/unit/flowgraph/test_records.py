"""Record: attrs classes built in place, decoded by msgspec, with errors that name the field."""

# No `from __future__ import annotations`: the records below are decoded by msgspec, which
# resolves string annotations through the defining module, and these tests also define
# records inside functions.

import datetime as dt
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import ClassVar

import attrs
import pytest

from flowgraph.errors import ConfigurationError, SerializationError
from flowgraph.records import Field, Record, json_decoder, record_class, record_name

REPO = Path(__file__).resolve().parents[3]


class Item(Record):
    name: str
    price: float = 0.0


class Click(Record):
    url: str
    user: str
    ts: float
    referrer: str | None = None
    tags: list[str] = attrs.field(factory=list)


class Basket(Record):
    owner: str
    items: list[Item] = []
    by_sku: dict[str, Item] = {}
    best: Item | None = None
    at: dt.datetime | None = None


class PaidClick(Click):
    amount: int = 0


class UserKey(Record, frozen=True):
    user: str


class Node(Record):
    label: str
    child: "Leaf | None" = None  # defined below: decoders are built on first use


class Leaf(Record):
    weight: int


def test_constructor_takes_positional_and_keyword_arguments_with_defaults() -> None:
    c = Click("https://a", "bob", 1.5)
    assert (c.url, c.user, c.ts, c.referrer, c.tags) == ("https://a", "bob", 1.5, None, [])
    assert Click(url="https://a", user="bob", ts=1.5, referrer="r").referrer == "r"


def test_subclass_is_the_same_class_made_into_an_attrs_class() -> None:
    assert attrs.has(Click)
    assert [a.name for a in attrs.fields(Click)] == ["url", "user", "ts", "referrer", "tags"]
    assert Click.__module__ == __name__


def test_mutable_defaults_are_not_shared_between_instances() -> None:
    class Bag(Record):
        seen: list[str] = []
        nested: dict[str, list[int]] = {"a": [1]}
        factory: list[int] = attrs.field(factory=list)

    a, b = Bag(), Bag()
    a.seen.append("x")
    a.nested["a"].append(2)
    a.factory.append(1)
    assert (b.seen, b.nested, b.factory) == ([], {"a": [1]}, [])


def test_classvar_is_not_a_field() -> None:
    class WithConstant(Record):
        KINDS: ClassVar[list[str]] = ["a"]
        kind: str

    assert [a.name for a in attrs.fields(WithConstant)] == ["kind"]
    assert WithConstant.KINDS == ["a"]


def test_equality_is_by_value_and_by_class() -> None:
    assert Click("u", "bob", 1.0) == Click("u", "bob", 1.0)
    assert Click("u", "bob", 1.0) != Click("u", "alice", 1.0)
    assert Click("u", "bob", 1.0) != PaidClick("u", "bob", 1.0)


def test_hash_is_by_value_so_records_can_be_keys() -> None:
    counts = {Item("a", 1.0): 1}
    counts[Item("a", 1.0)] += 1
    assert counts == {Item("a", 1.0): 2}


def test_repr_reads_like_the_constructor_call() -> None:
    assert repr(Item("pen", 2.5)) == "Item(name='pen', price=2.5)"


def test_frozen_records_cannot_change_and_their_subclasses_stay_frozen() -> None:
    class SessionKey(UserKey):  # type: ignore[misc]  # mypy wants frozen=True repeated
        session: int = 0

    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        UserKey("bob").user = "alice"  # type: ignore[misc]
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        SessionKey("bob").session = 1
    assert {UserKey("bob"), UserKey("bob")} == {UserKey("bob")}


def test_inheritance_adds_fields_after_the_parents() -> None:
    p = PaidClick("u", "bob", 1.0, amount=3)
    assert isinstance(p, Click)
    assert [a.name for a in attrs.fields(PaidClick)][-2:] == ["tags", "amount"]
    assert PaidClick.decode(p.encode()) == p


def test_required_field_after_a_default_says_how_to_fix_it() -> None:
    with pytest.raises(TypeError, match=r"field 'country' has no default.*kw_only=True"):

        class Geo(Click):
            country: str  # type: ignore[misc]


def test_kw_only_allows_required_fields_after_defaults() -> None:
    class Geo(Click, kw_only=True):
        country: str

    g = Geo("u", "bob", 1.0, country="NL")
    assert g.country == "NL"
    assert g.referrer is None


def test_field_on_the_class_is_a_named_getter() -> None:
    assert isinstance(Click.user, Field)
    assert Click.user.__name__ == "user"
    assert Click.user(Click("u", "bob", 1.0)) == "bob"
    assert PaidClick.amount.record is PaidClick
    assert Click("u", "bob", 1.0).user == "bob"


def test_json_round_trip_of_nested_records_lists_dicts_and_datetimes() -> None:
    at = dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.UTC)
    basket = Basket("bob", [Item("pen", 2.5)], {"sku1": Item("ink")}, best=Item("pen", 2.5), at=at)
    data = basket.encode()
    assert json.loads(data)["at"] == "2024-05-01T12:30:00Z"
    assert Basket.decode(data) == basket
    assert isinstance(Basket.decode(data).by_sku["sku1"], Item)


def test_to_dict_is_json_compatible_and_from_dict_reverses_it() -> None:
    basket = Basket("bob", [Item("pen")], at=dt.datetime(2024, 5, 1, tzinfo=dt.UTC))
    d = basket.to_dict()
    assert d["items"] == [{"name": "pen", "price": 0.0}]
    assert d["at"] == "2024-05-01T00:00:00Z"
    json.dumps(d)
    assert Basket.from_dict(d) == basket


def test_optional_fields_accept_null_and_may_be_missing() -> None:
    assert Click.decode(b'{"url":"u","user":"b","ts":1,"referrer":null}').referrer is None
    assert Click.decode(b'{"url":"u","user":"b","ts":1}').referrer is None
    assert Basket.decode(b'{"owner":"b","best":{"name":"x"}}').best == Item("x")


def test_forward_references_to_later_records_resolve_on_first_decode() -> None:
    assert Node.decode(b'{"label":"n","child":{"weight":2}}') == Node("n", Leaf(2))


def test_registry_maps_module_qualname_to_the_class() -> None:
    assert record_name(Click) == f"{__name__}.Click"
    assert record_class(record_name(Click)) is Click
    assert record_class("no.such.Record") is None


def test_redefining_a_record_replaces_it_in_the_registry() -> None:
    def define() -> type[Record]:
        class Again(Record):
            x: int

        return Again

    first, second = define(), define()
    assert record_name(first) == record_name(second)
    assert record_class(record_name(first)) is second


def test_decode_error_names_the_field_and_keeps_msgspec_as_the_cause() -> None:
    with pytest.raises(SerializationError) as info:
        Click.decode(b'{"url": 1, "user": "bob", "ts": 1}')
    err = info.value.with_topic("clicks")
    expected = "cannot decode value of topic 'clicks' at field 'url': expected `str`, got `int`"
    assert str(err) == expected
    assert (err.field, err.reason) == ("url", "expected `str`, got `int`")
    assert type(err.__cause__).__name__ == "ValidationError"


@pytest.mark.parametrize(
    ("data", "field", "reason"),
    [
        (b'{"owner":"b","items":[{"name":3}]}', "items[0].name", "expected `str`, got `int`"),
        (b'{"owner":"b","items":[{}]}', "items[0].name", "object missing required field `name`"),
        (b'{"items":[]}', "owner", "object missing required field `owner`"),
        (b'{"owner":"b","at":"yesterday"}', "at", "invalid RFC3339 encoded datetime"),
        (b'{"owner":', None, "input data was truncated"),
        (b"[1]", None, "expected `object`, got `array`"),
    ],
)
def test_decode_errors_carry_the_json_path(data: bytes, field: str | None, reason: str) -> None:
    with pytest.raises(SerializationError) as info:
        Basket.decode(data)
    assert info.value.field == field
    assert info.value.reason == reason


def test_from_dict_rejects_bad_input_with_the_field() -> None:
    with pytest.raises(SerializationError, match=r"at field 'ts': expected `float`, got `str`"):
        Click.from_dict({"url": "u", "user": "b", "ts": "soon"})


def test_unknown_field_type_is_a_configuration_error_naming_the_record() -> None:
    class Holder(Record):
        thing: "Undefined"  # type: ignore[name-defined]  # noqa: F821

    with pytest.raises(ConfigurationError, match=r"Record .*Holder cannot be decoded.*'Undefined'"):
        Holder.decode(b"{}")


def test_unsupported_field_type_is_a_configuration_error_naming_the_record() -> None:
    class Either(Record):
        value: list[int] | tuple[int, int]

    with pytest.raises(ConfigurationError, match=r"Record .*Either cannot be decoded.*unions"):
        json_decoder(Either)


def test_mypy_accepts_good_calls_and_rejects_bad_ones() -> None:
    ok, bad = REPO / "tests/typing/records_ok.py", REPO / "tests/typing/records_bad.py"
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--follow-imports=silent", "--cache-dir=/dev/null",
         "--no-error-summary", str(ok), str(bad)],
        cwd=REPO, capture_output=True, text=True, check=False,
    )  # fmt: skip
    reported = {
        (Path(m[1]).name, int(m[2]))
        for m in re.finditer(r"^(.+?):(\d+): error:", result.stdout, re.MULTILINE)
    }
    expected = {
        ("records_bad.py", n)
        for n, line in enumerate(bad.read_text().splitlines(), 1)
        if line.endswith("# error")
    }
    assert reported == expected, result.stdout + result.stderr
