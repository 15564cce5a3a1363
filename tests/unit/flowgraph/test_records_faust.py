"""Records on Faust's JSON wire format: what `faust.Record` writes is read, and written on request.

The golden bytes below are what Faust (faust-streaming) writes, derived from its source:
`Record.to_representation()` (faust/models/record.py) is `asdict()`, the fields in class
order, plus ``"__faust": {"ns": namespace}`` last when the class option `include_metadata`
is on (its default, `ModelOptions.include_metadata = True` in faust/types/models.py);
`faust.utils.json.dumps` writes that with ``separators=(",", ":")`` (or orjson, compact too);
its `on_default` writes `Decimal` as `str(d)`, a datetime as `isoformat()` with "+00:00"
turned into "Z", and a nested record through `__json__`, i.e. its own `to_representation()`.
With `validation=True` Faust coerces field values (`FloatField` applies `float()`), so
`amount=3` is written `3.0`. The bytes were checked against faust-streaming 0.15.3 (with the
standard-library JSON; Faust is not a test dependency).
"""

# No `from __future__ import annotations`: records are also defined inside test functions,
# and msgspec resolves string annotations through the module only.

import datetime as dt
import subprocess
import sys
import textwrap
from decimal import Decimal
from pathlib import Path

import pytest

import flowgraph as fg
from flowgraph.errors import ConfigurationError, SerializationError
from flowgraph.records import Record, ValidationError
from flowgraph.serde import AutoCodec, JsonCodec, RecordCodec, codec_for, fast_decoder

REPO = Path(__file__).resolve().parents[3]


class Order(Record):
    account_id: str
    amount: float = 1.0


class FaustOrder(Record, include_metadata=True, namespace="shop.Order"):
    account_id: str
    amount: float = 1.0


class Item(Record, include_metadata=True, namespace="shop.Item"):
    sku: str
    qty: int = 1


class Basket(Record, include_metadata=True, namespace="shop.Basket"):
    owner: str
    items: list[Item]
    by_sku: dict[str, Item]
    best: Item | None = None
    at: dt.datetime | None = None
    price: Decimal | None = None


class PlainBasket(Record):
    """No metadata of its own, but its items carry theirs."""

    owner: str
    items: list[Item] = []


class Checked(Record, include_metadata=True, namespace="shop.Checked", validation=True):
    account_id: str
    amount: float = 1.0


# What Faust writes for Order(account_id="a", amount=3) in module "shop".
FAUST_ORDER = b'{"account_id":"a","amount":3,"__faust":{"ns":"shop.Order"}}'
FAUST_ORDER_PLAIN = b'{"account_id":"a","amount":3}'  # include_metadata=False
FAUST_BASKET = (
    b'{"owner":"o",'
    b'"items":[{"sku":"s","qty":2,"__faust":{"ns":"shop.Item"}}],'
    b'"by_sku":{"s":{"sku":"s","qty":1,"__faust":{"ns":"shop.Item"}}},'
    b'"best":{"sku":"b","qty":1,"__faust":{"ns":"shop.Item"}},'
    b'"at":"2024-01-02T03:04:05.123456Z",'
    b'"price":"3.10",'
    b'"__faust":{"ns":"shop.Basket"}}'
)
BASKET = Basket(
    owner="o",
    items=[Item("s", 2)],
    by_sku={"s": Item("s")},
    best=Item("b"),
    at=dt.datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=dt.UTC),
    price=Decimal("3.10"),
)


def decoders(cls: type[Record]) -> dict[str, object]:
    """Every way flowgraph turns JSON bytes into a record of `cls`."""
    codec = RecordCodec(cls)
    return {
        "fast_decoder": fast_decoder(codec),
        "RecordCodec.decode": codec.decode,
        "Record.decode": cls.decode,
        "Record.loads": cls.loads,
    }


# --- reading what Faust writes ---------------------------------------------------------------


@pytest.mark.parametrize(
    "way", ["fast_decoder", "RecordCodec.decode", "Record.decode", "Record.loads"]
)
def test_faust_metadata_is_ignored_when_decoding(way: str) -> None:
    decode = decoders(Order)[way]
    assert decode(FAUST_ORDER) == Order("a", 3.0)  # type: ignore[operator]
    basket = decoders(Basket)[way](FAUST_BASKET)  # type: ignore[operator]
    assert basket == BASKET
    assert type(basket.items[0]) is Item


def test_faust_metadata_is_ignored_by_from_dict_and_from_data() -> None:
    data = {"account_id": "a", "amount": 3, "__faust": {"ns": "shop.Order"}}
    assert Order.from_dict(data) == Order("a", 3.0)
    assert Order.from_data(data) == Order("a", 3.0)
    nested = {"owner": "o", "items": [{"sku": "s", "__faust": {"ns": "shop.Item"}}]}
    assert PlainBasket.from_data(nested) == PlainBasket("o", [Item("s")])


def test_metadata_naming_another_or_unknown_class_is_still_ignored() -> None:
    # Faust's typed topics (`value_type=Order`) ignore a namespace they do not know too.
    data = b'{"account_id":"a","__faust":{"ns":"some.Unknown"},"extra":[1,{"x":2}]}'
    assert fast_decoder(codec_for(Order))(data) == Order("a")


def test_unknown_extra_fields_are_ignored() -> None:
    assert Order.decode(b'{"account_id":"a","currency":"EUR","amount":2}') == Order("a", 2.0)


def test_metadata_does_not_hide_a_missing_or_bad_field() -> None:
    with pytest.raises(SerializationError, match="account_id"):
        Order.decode(b'{"__faust":{"ns":"shop.Order"}}')
    with pytest.raises(SerializationError, match="expected `float`, got `str`"):
        Order.decode(b'{"account_id":"a","amount":"x","__faust":{"ns":"shop.Order"}}')


# --- writing it ------------------------------------------------------------------------------


def test_records_write_plain_json_unless_they_ask_for_metadata() -> None:
    assert Order(account_id="a", amount=3).encode() == FAUST_ORDER_PLAIN
    assert Order(account_id="a", amount=3).dumps() == FAUST_ORDER_PLAIN
    assert codec_for(Order).encode(Order(account_id="a", amount=3)) == FAUST_ORDER_PLAIN


def test_include_metadata_writes_what_faust_writes() -> None:
    order = FaustOrder(account_id="a", amount=3)
    assert order.dumps() == FAUST_ORDER
    assert order.encode() == FAUST_ORDER
    assert order.dumps(serializer="json") == FAUST_ORDER
    assert codec_for(FaustOrder).encode(order) == FAUST_ORDER
    assert FaustOrder.loads(FAUST_ORDER) == order


def test_default_is_written_as_its_value() -> None:
    assert FaustOrder(account_id="a").dumps() == (
        b'{"account_id":"a","amount":1.0,"__faust":{"ns":"shop.Order"}}'
    )


def test_default_namespace_is_module_and_qualname() -> None:
    class Local(Record, include_metadata=True):
        x: int

    assert Local(1).dumps() == (
        b'{"x":1,"__faust":{"ns":"' + f"{__name__}.{Local.__qualname__}".encode() + b'"}}'
    )


def test_namespace_of_a_class_run_as_a_script_is_its_real_module_name(tmp_path: Path) -> None:
    # As Faust (mode's canoname): __main__ becomes the script's dotted package path.
    pkg = tmp_path / "shop"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "orders.py").write_text(
        textwrap.dedent("""
            import sys
            import flowgraph as fg

            class Order(fg.Record, include_metadata=True):
                account_id: str
                amount: float = 1.0

            sys.stdout.buffer.write(Order(account_id="a", amount=3).dumps())
        """)
    )
    done = subprocess.run(
        [sys.executable, str(pkg / "orders.py")], capture_output=True, check=True, cwd=tmp_path
    )
    assert done.stdout == b'{"account_id":"a","amount":3,"__faust":{"ns":"shop.orders.Order"}}'


def test_a_record_without_fields_writes_only_the_metadata() -> None:
    class Ping(Record, include_metadata=True, namespace='shop."Ping"'):
        pass

    assert Ping().dumps() == b'{"__faust":{"ns":"shop.\\"Ping\\""}}'
    assert Ping.loads(Ping().dumps()) == Ping()


def test_nested_records_carry_their_own_metadata() -> None:
    assert BASKET.dumps() == FAUST_BASKET
    assert codec_for(Basket).encode(BASKET) == FAUST_BASKET


def test_a_plain_record_writes_the_metadata_of_records_it_holds() -> None:
    assert PlainBasket("o", [Item("s")]).encode() == (
        b'{"owner":"o","items":[{"sku":"s","qty":1,"__faust":{"ns":"shop.Item"}}]}'
    )


def test_a_record_with_metadata_holding_one_without_writes_only_its_own() -> None:
    class Line(Record):
        sku: str

    class Cart(Record, include_metadata=True, namespace="shop.Cart"):
        lines: list[Line]

    assert Cart([Line("s")]).dumps() == b'{"lines":[{"sku":"s"}],"__faust":{"ns":"shop.Cart"}}'


def test_a_subclass_instance_is_written_with_its_own_fields_and_metadata() -> None:
    class Base(Record):
        account_id: str

    class Special(Base, include_metadata=True, namespace="shop.Special"):
        vip: bool = True

    class Holder(Record):
        order: Base

    special = Special("a")
    want = b'{"account_id":"a","vip":true,"__faust":{"ns":"shop.Special"}}'
    assert codec_for(Base).encode(special) == want
    assert Holder(special).encode() == b'{"order":' + want + b"}"


def test_include_metadata_is_inherited_and_the_namespace_is_not() -> None:
    class Parent(Record, include_metadata=True, namespace="shop.Parent"):
        a: int

    class Child(Parent):
        b: int = 0

    class Quiet(Parent, include_metadata=False):
        pass

    assert Child(1).dumps() == (
        b'{"a":1,"b":0,"__faust":{"ns":"' + f"{__name__}.{Child.__qualname__}".encode() + b'"}}'
    )
    assert Quiet(1).dumps() == b'{"a":1}'


def test_auto_codec_is_not_affected_by_metadata_and_keeps_decimals_exact() -> None:
    codec = AutoCodec()
    back = codec.decode(codec.encode(BASKET))
    assert back == BASKET
    assert str(back.price) == "3.10"
    assert b"__faust" not in codec.encode(BASKET)
    assert codec.decode(codec.encode({Decimal("-1E+2"): [Decimal("0.001")]})) == {
        Decimal("-1E+2"): [Decimal("0.001")]
    }


# --- field types -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("when", "written"),
    [
        (dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC), b'"2024-01-02T03:04:05Z"'),
        (dt.datetime(2024, 1, 2, 3, 4, 5, 120000), b'"2024-01-02T03:04:05.120000"'),
        (
            dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.timezone(dt.timedelta(hours=2))),
            b'"2024-01-02T03:04:05+02:00"',
        ),
    ],
)
def test_datetimes_are_iso_8601_as_faust_writes_them(when: dt.datetime, written: bytes) -> None:
    basket = Basket("o", [], {}, at=when)
    data = basket.dumps()
    assert b'"at":' + written + b"," in data
    back = Basket.decode(data)
    assert back.at == when
    assert back.at.utcoffset() == when.utcoffset()


@pytest.mark.parametrize(
    "text",
    [b'"2024-01-02T03:04:05Z"', b'"2024-01-02T03:04:05+00:00"', b'"2024-01-02 03:04:05+0000"'],
)
def test_iso_8601_spellings_faust_reads_are_read(text: bytes) -> None:
    data = b'{"owner":"o","items":[],"by_sku":{},"at":' + text + b"}"
    assert Basket.decode(data).at == dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


def test_decimals_are_written_as_strings_and_read_from_strings_or_numbers() -> None:
    assert b'"price":"3.10"' in Basket("o", [], {}, price=Decimal("3.10")).dumps()
    for price in (b'"3.10"', b"3.10"):
        data = b'{"owner":"o","items":[],"by_sku":{},"price":' + price + b"}"
        got = fast_decoder(codec_for(Basket))(data)
        assert (got.price, str(got.price)) == (Decimal("3.10"), "3.10")  # exact, no float


def test_optional_fields_may_be_null_or_missing_and_defaults_fill_in() -> None:
    data = b'{"owner":"o","items":[],"by_sku":{},"best":null,"__faust":{"ns":"shop.Basket"}}'
    got = Basket.decode(data)
    assert (got.best, got.at, got.price) == (None, None, None)
    assert got.dumps() == (
        b'{"owner":"o","items":[],"by_sku":{},"best":null,"at":null,"price":null,'
        b'"__faust":{"ns":"shop.Basket"}}'
    )


# --- Faust's methods -------------------------------------------------------------------------


def test_asdict_is_faust_shallow_dict_of_the_fields() -> None:
    d = BASKET.asdict()
    assert list(d) == ["owner", "items", "by_sku", "best", "at", "price"]
    assert d["best"] is BASKET.best  # nested records stay records
    assert d["items"][0] is BASKET.items[0]
    assert "__faust" not in d


def test_to_representation_adds_the_metadata_at_the_top_only() -> None:
    assert FaustOrder("a", 3).to_representation() == {
        "account_id": "a",
        "amount": 3,
        "__faust": {"ns": "shop.Order"},
    }
    assert Order("a", 3).to_representation() == {"account_id": "a", "amount": 3}
    assert BASKET.to_representation()["best"] is BASKET.best


def test_to_dict_stays_the_fields_as_builtins() -> None:
    assert FaustOrder("a", 3).to_dict() == {"account_id": "a", "amount": 3}


def test_loads_takes_bytes_or_str_and_from_data_a_dict() -> None:
    assert FaustOrder.loads(FAUST_ORDER.decode()) == FaustOrder("a", 3.0)
    assert FaustOrder.loads(FAUST_ORDER, serializer="json") == FaustOrder("a", 3.0)
    assert FaustOrder.from_data({"account_id": "a"}) == FaustOrder("a")


def test_serializers_other_than_json_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="serializer 'pickle' is not supported"):
        FaustOrder("a").dumps(serializer="pickle")
    with pytest.raises(ConfigurationError, match="serializer 'yaml' is not supported"):
        FaustOrder.loads(FAUST_ORDER, serializer="yaml")


def test_faust_class_options_that_change_nothing_are_accepted() -> None:
    class Stamped(Record, serializer="json", isodates=True, decimals=True):
        at: dt.datetime
        price: Decimal

    got = Stamped.loads(b'{"at":"2024-01-02T03:04:05Z","price":"1.5"}')
    assert got == Stamped(dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC), Decimal("1.5"))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"serializer": "pickle"}, "serializer 'pickle' is not supported"),
        ({"polymorphic_fields": True}, "Faust option 'polymorphic_fields' is not supported"),
        ({"abstract": True}, "Faust option 'abstract' is not supported"),
    ],
)
def test_faust_class_options_flowgraph_lacks_are_refused_by_name(
    options: dict[str, object], message: str
) -> None:
    with pytest.raises(TypeError, match=message):

        class Bad(Record, **options):
            x: int


# --- validation=True -------------------------------------------------------------------------


def test_validation_coerces_as_faust_does_so_the_bytes_match() -> None:
    checked = Checked(account_id="a", amount=3)
    assert type(checked.amount) is float
    assert checked.dumps() == b'{"account_id":"a","amount":3.0,"__faust":{"ns":"shop.Checked"}}'
    assert Checked("a", "2.5").amount == 2.5  # type: ignore[arg-type]


def test_validation_error_names_the_record_and_field_in_one_sentence() -> None:
    with pytest.raises(ValidationError) as info:
        Checked(account_id="a", amount="lots")  # type: ignore[arg-type]
    err = info.value
    assert isinstance(err, SerializationError)
    assert isinstance(err, ValueError)  # like faust.exceptions.ValidationError
    assert err.field == "amount"
    assert str(err) == "cannot build Checked record at field 'amount': expected `float`, got `str`"


def test_validation_also_checks_assignments_and_nested_values() -> None:
    class Cart(Record, validation=True):
        owner: str
        items: list[Item] = []
        best: Item | None = None

    cart = Cart("o", [Item("s")], Item("b"))
    assert cart.items == [Item("s")]
    assert Cart("o", [{"sku": "s"}]).items == [Item("s")]  # type: ignore[list-item]
    with pytest.raises(ValidationError, match=r"at field 'best'"):
        Cart("o", best="b")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match=r"at field 'best'.*got `Order`"):
        Cart("o", best=Order("a"))  # type: ignore[arg-type]  # another record, same shape or not
    with pytest.raises(ValidationError, match=r"at field 'items'.*expected `int`, got `str`"):
        Cart("o", [{"sku": "s", "qty": "many"}])  # type: ignore[list-item]
    with pytest.raises(ValidationError, match=r"at field 'owner'"):
        cart.owner = 5  # type: ignore[assignment]


def test_records_without_validation_take_any_value_as_before() -> None:
    amount: object = Order("a", "x").amount  # type: ignore[arg-type]
    assert amount == "x"


def test_validated_records_decode_as_usual() -> None:
    data = b'{"account_id":"a","amount":3,"__faust":{"ns":"shop.Checked"}}'
    assert fast_decoder(codec_for(Checked))(data) == Checked("a", 3.0)
    with pytest.raises(SerializationError, match="amount"):
        Checked.decode(b'{"account_id":"a","amount":"x"}')


def test_untyped_json_codec_writes_a_records_metadata_and_decodes_to_a_dict() -> None:
    codec = JsonCodec()  # sinks of unknown type use it
    assert codec.encode(FaustOrder(account_id="a", amount=3)) == FAUST_ORDER
    assert codec.encode(Order(account_id="a", amount=3)) == FAUST_ORDER_PLAIN
    assert codec.encode({"a": [1]}) == b'{"a":[1]}'
    assert codec.decode(FAUST_ORDER) == {
        "account_id": "a",
        "amount": 3,
        "__faust": {"ns": "shop.Order"},
    }


def test_a_sink_of_unknown_type_writes_the_metadata() -> None:
    g = fg.Graph("faust-sink")
    orders = g.source("orders", value_type=Order)
    orders.map(lambda o: FaustOrder(o.account_id, o.amount), name="to-faust").to("faust-orders")
    with fg.testing.TestDriver(g) as driver:
        driver.send("orders", None, Order(account_id="a", amount=3))
        written = driver.output("faust-orders")  # decoded by the sink's untyped json codec
    assert written == [(None, {"account_id": "a", "amount": 3.0, "__faust": {"ns": "shop.Order"}})]
