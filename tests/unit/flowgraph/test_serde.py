"""Codecs: exact round trips, names for `explain`, and SerializationError for every failure."""

# No `from __future__ import annotations`: msgspec resolves record annotations at runtime.

import collections
import datetime as dt
import enum
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flowgraph.errors import ConfigurationError, SerializationError
from flowgraph.records import Record
from flowgraph.serde import (
    AutoCodec,
    Codec,
    FloatCodec,
    IntCodec,
    JsonCodec,
    RawCodec,
    RecordCodec,
    StrCodec,
    codec_for,
)


class Item(Record):
    name: str
    price: float = 0.0


class Click(Record):
    url: str
    user: str
    ts: float
    referrer: str | None = None
    items: list[Item] = []
    at: dt.datetime | None = None


class Point(Record, frozen=True):
    x: int
    y: int


class Shape(Record):
    corners: tuple[Point, ...]
    named: dict[str, Point] = {}
    label: Item | None = None


# --- codec_for ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (None, RawCodec()),
        (bytes, RawCodec()),
        (str, StrCodec()),
        (int, IntCodec()),
        (float, FloatCodec()),
        ("raw", RawCodec()),
        ("str", StrCodec()),
        ("int", IntCodec()),
        ("float", FloatCodec()),
        ("json", JsonCodec()),
        ("auto", AutoCodec()),
        (Click, RecordCodec(Click)),
    ],
)
def test_codec_for_maps_declared_types_and_names(spec: Any, expected: Codec) -> None:
    assert codec_for(spec) == expected


def test_codec_for_returns_a_codec_instance_as_is() -> None:
    codec = RecordCodec(Item)
    assert codec_for(codec) is codec


@pytest.mark.parametrize(
    ("spec", "shown"), [(list, "list"), ("yaml", "'yaml'"), (Record, "Record"), (3, "3")]
)
def test_codec_for_rejects_anything_else_in_one_sentence(spec: Any, shown: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        codec_for(spec)
    msg = str(info.value)
    assert msg.startswith(f"no codec for {shown}: ")
    assert "Record subclass" in msg
    assert "'auto'" in msg
    assert "\n" not in msg


@pytest.mark.parametrize(
    ("codec", "name"),
    [
        (RawCodec(), "raw"),
        (StrCodec(), "str"),
        (IntCodec(), "int"),
        (FloatCodec(), "float"),
        (JsonCodec(), "json"),
        (AutoCodec(), "auto"),
        (RecordCodec(Click), "json<Click>"),
    ],
)
def test_every_codec_is_a_codec_with_a_short_name(codec: Codec, name: str) -> None:
    assert isinstance(codec, Codec)
    assert codec.name == name


# --- simple codecs ------------------------------------------------------------------------


def test_raw_passes_bytes_through_and_encodes_str_as_utf8() -> None:
    raw = RawCodec()
    data = b"\x00\xff"
    assert raw.encode(data) is data
    assert raw.decode(data) is data
    assert raw.encode(bytearray(b"ab")) == b"ab"
    assert raw.encode(memoryview(b"ab")) == b"ab"
    assert raw.encode("é") == "é".encode()


def test_str_round_trips_utf8_and_rejects_invalid_bytes() -> None:
    assert StrCodec().decode(StrCodec().encode("grüß 🎉")) == "grüß 🎉"
    with pytest.raises(SerializationError, match="not UTF-8 text"):
        StrCodec().decode(b"\xff")


@pytest.mark.parametrize("n", [0, 42, -7, 2**200])
def test_int_is_decimal_text_of_any_size(n: int) -> None:
    assert IntCodec().encode(n) == str(n).encode()
    assert IntCodec().decode(IntCodec().encode(n)) == n


def test_int_decode_tolerates_whitespace_and_rejects_non_numbers() -> None:
    assert IntCodec().decode(b" 42\n") == 42
    with pytest.raises(SerializationError, match="not a decimal integer: b'4x'"):
        IntCodec().decode(b"4x")


@pytest.mark.parametrize("x", [0.1, -2.5, 1e300, float("inf"), 3])
def test_float_is_decimal_text_that_reads_back_exactly(x: float) -> None:
    out = FloatCodec().decode(FloatCodec().encode(x))
    assert out == x
    assert type(out) is float


def test_float_decode_rejects_non_numbers() -> None:
    with pytest.raises(SerializationError, match="not a decimal number"):
        FloatCodec().decode(b"one")


@pytest.mark.parametrize(
    ("codec", "obj", "reason"),
    [
        (RawCodec(), 1, "codec 'raw' expects bytes, bytearray, memoryview or str, got int"),
        (StrCodec(), b"x", "codec 'str' expects str, got bytes"),
        (IntCodec(), True, "codec 'int' expects int, got bool"),
        (IntCodec(), 1.5, "codec 'int' expects int, got float"),
        (FloatCodec(), "1.5", "codec 'float' expects float or int, got str"),
        (RecordCodec(Click), {"url": "u"}, "codec 'json<Click>' expects Click, got dict"),
        (RecordCodec(Click), Item("x"), "codec 'json<Click>' expects Click, got Item"),
    ],
)
def test_encoding_the_wrong_type_says_what_was_given_and_expected(
    codec: Codec, obj: Any, reason: str
) -> None:
    with pytest.raises(SerializationError) as info:
        codec.encode(obj)
    assert info.value.reason == reason
    assert info.value.part == "value"


# --- json ---------------------------------------------------------------------------------


def test_json_round_trips_builtins() -> None:
    value = {"a": [1, 2.5, None, True, "s"], "b": {"c": []}}
    assert JsonCodec().decode(JsonCodec().encode(value)) == value


def test_json_errors_are_serialization_errors() -> None:
    with pytest.raises(SerializationError, match="JSON is malformed"):
        JsonCodec().decode(b"{nope")
    with pytest.raises(SerializationError, match="codec 'json' cannot encode it"):
        JsonCodec().encode(object())


# --- records ------------------------------------------------------------------------------

texts = st.text(max_size=20)
items = st.builds(Item, name=texts, price=st.floats(allow_nan=False, allow_infinity=False))
clicks = st.builds(
    Click,
    url=texts,
    user=texts,
    ts=st.floats(allow_nan=False, allow_infinity=False),
    referrer=st.none() | texts,
    items=st.lists(items, max_size=3),
    at=st.none() | st.datetimes(timezones=st.none() | st.just(dt.UTC)),
)


@given(clicks)
def test_record_codec_round_trips(click: Click) -> None:
    codec = RecordCodec(Click)
    assert codec.decode(codec.encode(click)) == click


def test_record_decode_error_names_topic_and_field() -> None:
    with pytest.raises(SerializationError) as info:
        RecordCodec(Click).decode(b'{"url": 1, "user": "bob", "ts": 1.0}')
    assert str(info.value.with_topic("clicks")) == (
        "cannot decode value of topic 'clicks' at field 'url': expected `str`, got `int`"
    )
    assert str(info.value.with_topic("clicks", part="key")).startswith("cannot decode key of")


def test_record_decode_error_names_nested_fields() -> None:
    data = b'{"url":"u","user":"b","ts":1,"items":[{"name":"a"},{"name":2}]}'
    with pytest.raises(SerializationError) as info:
        RecordCodec(Click).decode(data)
    assert info.value.field == "items[1].name"


def test_record_decode_of_garbage_is_a_serialization_error() -> None:
    for data in [b"", b"\xff", b"null", b'"text"']:
        with pytest.raises(SerializationError):
            RecordCodec(Click).decode(data)


def test_record_codecs_compare_by_class() -> None:
    assert RecordCodec(Click) == RecordCodec(Click)
    assert RecordCodec(Click) != RecordCodec(Item)
    assert hash(RecordCodec(Click)) == hash(RecordCodec(Click))


# --- auto ---------------------------------------------------------------------------------


def assert_same(a: Any, b: Any) -> None:
    """Equal, and of the same type all the way down (1 == 1.0 == True is not enough)."""
    assert type(a) is type(b), (a, b)
    assert a == b
    if isinstance(a, list | tuple):
        for x, y in zip(a, b, strict=True):
            assert_same(x, y)
    elif isinstance(a, dict):
        for (k1, v1), (k2, v2) in zip(a.items(), b.items(), strict=True):
            assert_same(k1, k2)
            assert_same(v1, v2)


def round_trip(value: Any) -> Any:
    codec = AutoCodec()
    return codec.decode(codec.encode(value))


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        False,
        0,
        -(2**63),
        2**64 - 1,
        2**64,
        -(2**63) - 1,
        -(2**300),
        1.5,
        -0.0,
        "",
        "text",
        b"",
        b"\x00bytes",
        [],
        [1, [2, "x"]],
        {},
        {"a": 1, 2: "b", b"k": None, 1.5: True, None: 0},
        (),
        (1, "a", (2,)),
        {("user", 1): 3, (): 0},
        {2**70: "big key"},
        {1, 2},
        frozenset({("a", 1)}),
        dt.datetime(2024, 5, 1, 12, 0, 0, 123456),
        dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC),
        dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.timezone(dt.timedelta(hours=-5))),
        Item("pen", 2.5),
        Click("u", "b", 1.0, items=[Item("a")], at=dt.datetime(2024, 1, 1)),
        Shape((Point(0, 0), Point(1, 2)), {"o": Point(0, 0)}, label=Item("sq")),
        {Point(1, 2): [Item("x")]},
        [(Point(1, 1), {"t": (1, 2)})],
    ],
)
def test_auto_round_trips_exactly(value: Any) -> None:
    assert_same(round_trip(value), value)


def test_auto_keeps_the_utc_offset_of_datetimes() -> None:
    value = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert round_trip(value).utcoffset() == dt.timedelta(hours=2)
    assert round_trip(dt.datetime(2024, 5, 1)).tzinfo is None


def test_auto_keeps_value_and_offset_of_an_aware_datetime_subclass() -> None:
    """A datetime subclass (pandas.Timestamp is one) comes back as a plain datetime: the same
    instant, wall time, microseconds and UTC offset."""

    class Stamp(dt.datetime):
        pass

    offset = dt.timedelta(hours=5, minutes=30)
    value = Stamp(2024, 5, 1, 12, 34, 56, 789012, tzinfo=dt.timezone(offset))
    out = round_trip(value)
    assert type(out) is dt.datetime
    assert out.utcoffset() == offset
    assert out == value
    assert out.timestamp() == value.timestamp()
    assert out.isoformat() == "2024-05-01T12:34:56.789012+05:30"


def test_auto_turns_subclasses_of_builtins_into_the_builtin() -> None:
    class Color(enum.IntEnum):
        RED = 1

    out = round_trip([Color.RED, collections.Counter("aab"), collections.OrderedDict(a=1)])
    assert_same(out, [1, {"a": 2, "b": 1}, {"a": 1}])


@pytest.mark.parametrize("value", [object(), dt.date(2024, 1, 1), [1, {"k": complex(1, 2)}]])
def test_auto_rejects_other_types_naming_them(value: Any) -> None:
    with pytest.raises(SerializationError, match=r"codec 'auto' cannot encode .*; it takes None"):
        AutoCodec().encode(value)


def test_auto_decode_of_a_record_whose_class_is_unknown_says_to_import_it() -> None:
    def define() -> Any:
        class Ghost(Record):
            x: int

        return Ghost

    data = AutoCodec().encode(define()(1))
    data = data.replace(b"Ghost", b"Ghast")
    with pytest.raises(SerializationError, match=r"no Record class '.*Ghast' is defined.*import"):
        AutoCodec().decode(data)


def test_auto_decode_drops_fields_a_record_no_longer_has() -> None:
    def define(with_extra: bool) -> Any:
        if with_extra:

            class Evolving(Record):
                name: str
                extra: int = 0

        else:

            class Evolving(Record):  # type: ignore[no-redef]
                name: str

        return Evolving

    data = AutoCodec().encode(define(with_extra=True)("n", 3))
    new = define(with_extra=False)
    assert AutoCodec().decode(data) == new("n")


def test_auto_decode_of_garbage_is_a_serialization_error() -> None:
    for data in [b"", b"\xc1", b"\x92\x01"]:
        with pytest.raises(SerializationError):
            AutoCodec().decode(data)


hashables = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**100), max_value=2**100)
    | st.floats(allow_nan=False)
    | st.text(max_size=10)
    | st.binary(max_size=10)
    | st.datetimes(timezones=st.none() | st.just(dt.UTC)),
    lambda inner: st.tuples(inner, inner) | st.frozensets(inner, max_size=3),
    max_leaves=8,
)
values = st.recursive(
    hashables,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(hashables, inner, max_size=4)
        | st.lists(inner, max_size=3).map(tuple)
        | st.sets(hashables, max_size=3)
    ),
    max_leaves=20,
)


@given(values)
def test_auto_round_trips_any_nesting_of_builtins(value: Any) -> None:
    assert_same(round_trip(value), value)


def test_codec_for_a_record_that_cannot_be_decoded_fails_when_the_graph_is_built() -> None:
    class Broken(Record):
        thing: "Undefined"  # type: ignore[name-defined]  # noqa: F821

    with pytest.raises(ConfigurationError, match=r"Record .*Broken cannot be decoded"):
        codec_for(Broken)
