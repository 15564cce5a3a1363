"""The "auto" codec's shortcuts for records write exactly the bytes of the generic way.

Repartition topics and stores hold these bytes, so the faster encoder must not change one of
them: `_reference_encode` is the generic encoder as it was before the shortcuts, and every
generated value (records nested in records, lists, dicts, tuples, sets, datetimes, Decimals,
big ints, defaults, renamed and computed fields) must encode to the same bytes and decode back
to an equal value.
"""

from __future__ import annotations

import datetime as dt
import decimal
from typing import Any

import attrs
import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowgraph.errors import SerializationError
from flowgraph.records import Record, record_name
from flowgraph.serde import AutoCodec

_INT_MIN = -(2**63)
_INT_MAX = 2**64 - 1
_PLAIN_KEYS = frozenset({str, int, float, bytes, bool, type(None)})
_FLAT = _PLAIN_KEYS - {int}
_reference_encoder = msgspec.msgpack.Encoder()


def _ext(code: int, payload: Any) -> msgspec.msgpack.Ext:
    return msgspec.msgpack.Ext(code, _reference_encoder.encode(payload))


def _prepare(obj: Any) -> Any:  # a copy of the generic encoder as it was
    t = type(obj)
    if t is str or t is float or t is bool or obj is None or t is bytes:
        return obj
    if t is int:
        if _INT_MIN <= obj <= _INT_MAX:
            return obj
        size = (obj.bit_length() + 8) // 8
        return msgspec.msgpack.Ext(4, obj.to_bytes(size, "big", signed=True))
    if t is list:
        return [_prepare(v) for v in obj]
    if t is dict:
        for k in obj:
            tk = type(k)
            if tk not in _PLAIN_KEYS or (tk is int and not _INT_MIN <= k <= _INT_MAX):
                return _ext(5, [[_prepare(k), _prepare(v)] for k, v in obj.items()])
        return {k: _prepare(v) for k, v in obj.items()}
    if t is tuple:
        for v in obj:
            tv = type(v)
            if tv not in _FLAT and (tv is not int or not _INT_MIN <= v <= _INT_MAX):
                return _ext(1, [_prepare(v) for v in obj])
        return msgspec.msgpack.Ext(1, _reference_encoder.encode(obj))
    if isinstance(obj, Record):
        fields = {
            a.alias: _prepare(getattr(obj, a.name)) for a in attrs.fields(type(obj)) if a.init
        }
        return _ext(2, [record_name(type(obj)), fields])
    if isinstance(obj, dt.datetime):
        return msgspec.msgpack.Ext(3, obj.isoformat().encode())
    if t is set or t is frozenset:
        return _ext(6 if t is set else 7, [_prepare(v) for v in obj])
    if t is decimal.Decimal:
        return msgspec.msgpack.Ext(8, str(obj).encode())
    raise AssertionError(f"the reference does not take {t}")


def _reference_encode(obj: Any) -> bytes:
    return _reference_encoder.encode(_prepare(obj))


class Flat(Record):
    s: str
    i: int
    f: float
    b: bool
    n: Any = None


class Loose(Record):
    a: Any
    b: Any = None
    tags: list[Any] = []


class Renamed(Record):
    _hidden: Any  # written under its alias "hidden"
    shown: Any = 0


class Computed(Record):
    a: Any
    derived: int = attrs.field(init=False, default=7)  # not written


class Frozen(Record, frozen=True):
    x: Any
    y: Any = "default"


class Empty(Record):
    pass


_timezones = st.sampled_from(
    [
        None,
        dt.UTC,
        dt.timezone(dt.timedelta(hours=5, minutes=30)),
        dt.timezone(-dt.timedelta(hours=8)),
    ]
)
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.integers(),  # beyond 64 bits too
    st.floats(allow_nan=False),
    st.text(max_size=12),
    st.text(min_size=200, max_size=300),  # payloads over 255 bytes
    st.binary(max_size=12),
    st.datetimes(timezones=_timezones),
    st.decimals(allow_nan=False, allow_infinity=False),
)
_hashables = st.one_of(
    st.integers(), st.text(max_size=5), st.tuples(st.integers(), st.text(max_size=3))
)


def _records(values: st.SearchStrategy[Any]) -> st.SearchStrategy[Record]:
    return st.one_of(
        st.builds(
            Flat,
            st.text(max_size=12),
            st.integers(min_value=_INT_MIN, max_value=_INT_MAX) | st.integers(),
            st.floats(allow_nan=False),
            st.booleans(),
        ),
        st.builds(
            Flat, st.text(), st.integers(), st.floats(allow_nan=False), st.booleans(), values
        ),
        st.builds(Loose, values),
        st.builds(Loose, values, values, st.lists(values, max_size=3)),
        st.builds(Renamed, hidden=values),
        st.builds(Renamed, hidden=values, shown=values),
        st.builds(Computed, values),
        st.builds(Frozen, values),
        st.builds(Frozen, values, values),
        st.just(Empty()),
    )


_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.text(max_size=5), inner, max_size=3),
        st.dictionaries(_hashables, inner, max_size=3),
        st.tuples(inner, inner),
        st.sets(_hashables, max_size=3),
        st.frozensets(_hashables, max_size=3),
        _records(inner),
    ),
    max_leaves=8,
)
_values_and_records = st.one_of(_records(_values), _values)


@settings(max_examples=400, deadline=None)
@given(_values_and_records)
def test_auto_codec_writes_the_bytes_of_the_generic_encoder(obj: Any) -> None:
    expected = _reference_encode(obj)
    codec = AutoCodec()
    assert codec.encode(obj) == expected  # the class is new to this codec
    assert codec.encode(obj) == expected  # the class is known: the top-level shortcut
    assert codec.encode([obj, obj]) == _reference_encode([obj, obj])  # nested
    back = codec.decode(expected)
    assert back == obj
    assert type(back) is type(obj)


def test_a_record_whose_attributes_changed_after_it_was_made_writes_the_same_bytes() -> None:
    codec = AutoCodec()
    r = Loose("a", "b")
    r.extra = "not a field"  # type: ignore[attr-defined]  # instance dict has one more key
    assert codec.encode(r) == _reference_encode(r)
    assert codec.encode(r) == _reference_encode(r)
    r = Loose("a", "b")
    del r.a  # the instance dict now holds the fields in another order
    r.a = "again"
    assert codec.encode(r) == _reference_encode(r)
    assert codec.encode(r) == _reference_encode(r)
    assert codec.decode(codec.encode(r)) == r


@pytest.mark.parametrize("value", [2**64, -(2**63) - 1, 2**200])
def test_a_field_holding_an_int_beyond_64_bits_goes_the_generic_way(value: int) -> None:
    codec = AutoCodec()
    r = Flat("s", value, 1.0, True)
    codec.encode(r)
    assert codec.encode(r) == _reference_encode(r)
    assert codec.decode(codec.encode(r)) == r
    assert codec.encode([r]) == _reference_encode([r])


def test_stored_fields_a_class_no_longer_has_are_dropped_and_missing_ones_are_an_error() -> None:
    codec = AutoCodec()
    name = record_name(Loose)
    stored = _reference_encoder.encode(_ext(2, [name, {"a": 1, "gone": 2}]))
    assert codec.decode(stored) == Loose(1)
    stored = _reference_encoder.encode(_ext(2, [name, {"b": 1}]))
    with pytest.raises(SerializationError, match="stored fields do not fit Record Loose"):
        codec.decode(stored)
