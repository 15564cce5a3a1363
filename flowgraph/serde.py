"""Codecs: how keys and values become bytes on topics and in stores.

`codec_for(spec)` turns what a user declares (`key_type=str`, `value_type=Click`, "json")
into a `Codec`. Codecs know nothing of topics: a failing `decode` raises
`SerializationError` without one, and the runtime adds it with `.with_topic(topic, part)`.
Null keys and values (Kafka tombstones) are the runtime's business; codecs never see them.

The codecs compare by value, so plans that hold them keep value equality.
"""

from __future__ import annotations

import datetime as dt
import decimal
import operator
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import attrs
import msgspec

from flowgraph.errors import ConfigurationError, SerializationError
from flowgraph.records import (
    Record,
    decode_error,
    json_decoder,
    json_encoder,
    metadata_in_use,
    record_class,
    record_name,
)

__all__ = [
    "AutoCodec",
    "Codec",
    "FloatCodec",
    "IntCodec",
    "JsonCodec",
    "RawCodec",
    "RecordCodec",
    "StrCodec",
    "codec_for",
]


@runtime_checkable
class Codec(Protocol):
    """Turns one kind of key or value into bytes and back."""

    @property
    def name(self) -> str:
        """Short name shown by `flowgraph explain`: "str", "json<Click>", "auto"."""
        ...

    def encode(self, obj: Any) -> bytes:
        """Bytes for `obj`; `SerializationError` if `obj` is not what the codec takes."""
        ...

    def decode(self, data: bytes) -> Any:
        """Value from `data`; `SerializationError` (never a library error) if it is bad."""
        ...


def _wrong_type(codec: str, expected: str, obj: object) -> SerializationError:
    reason = f"codec {codec!r} expects {expected}, got {type(obj).__name__}"
    return SerializationError(reason, part="value", action="encode")


@attrs.frozen
class RawCodec:
    """Bytes as they are. `str` is accepted and UTF-8 encoded, as in Faust's "raw".

    Decoding always gives `bytes`, so a str written here comes back as bytes.
    """

    name = "raw"

    def encode(self, obj: Any) -> bytes:
        if isinstance(obj, bytes | bytearray | memoryview):
            return bytes(obj)
        if isinstance(obj, str):
            return obj.encode()
        raise _wrong_type(self.name, "bytes, bytearray, memoryview or str", obj)

    def decode(self, data: bytes) -> bytes:
        return bytes(data)


@attrs.frozen
class StrCodec:
    """UTF-8 text."""

    name = "str"

    def encode(self, obj: Any) -> bytes:
        if not isinstance(obj, str):
            raise _wrong_type(self.name, "str", obj)
        return obj.encode()

    def decode(self, data: bytes) -> str:
        try:
            return str(data, "utf-8")
        except (UnicodeDecodeError, TypeError) as exc:
            msg = f"not UTF-8 text: {exc}"
            raise SerializationError(msg) from exc


@attrs.frozen
class IntCodec:
    """Integers as decimal ASCII text (b"42").

    Text, not 8 fixed bytes: kafka-console-consumer and other tools show it as is, and
    Python ints of any size fit. Surrounding whitespace is tolerated when decoding.
    """

    name = "int"

    def encode(self, obj: Any) -> bytes:
        if isinstance(obj, bool):
            raise _wrong_type(self.name, "int", obj)
        try:
            value = operator.index(obj)  # also numpy integers
        except TypeError:
            raise _wrong_type(self.name, "int", obj) from None
        return b"%d" % value

    def decode(self, data: bytes) -> int:
        try:
            return int(data)
        except (ValueError, TypeError) as exc:
            msg = f"not a decimal integer: {bytes(data)[:40]!r}"
            raise SerializationError(msg) from exc


@attrs.frozen
class FloatCodec:
    """Floats as decimal text (`repr`: shortest form that reads back exactly; inf, nan)."""

    name = "float"

    def encode(self, obj: Any) -> bytes:
        if isinstance(obj, bool | str | bytes):
            raise _wrong_type(self.name, "float or int", obj)
        try:
            value = float(obj)
        except (TypeError, ValueError):
            raise _wrong_type(self.name, "float or int", obj) from None
        return repr(value).encode()

    def decode(self, data: bytes) -> float:
        try:
            return float(data)
        except (ValueError, TypeError) as exc:
            msg = f"not a decimal number: {bytes(data)[:40]!r}"
            raise SerializationError(msg) from exc


@attrs.frozen
class JsonCodec:
    """Untyped JSON: decodes to dicts, lists, str, int, float, bool and None.

    A record given to `encode` is written as its class writes it: with Faust's `__faust`
    metadata if the class has `include_metadata=True` (sinks of unknown type use this
    codec). The check for records is made only if such a class existed when the codec was
    made, so it costs nothing to programs that never ask for metadata.
    """

    name = "json"
    _encoder: msgspec.json.Encoder = attrs.field(
        init=False, eq=False, repr=False, factory=msgspec.json.Encoder
    )
    _decoder: msgspec.json.Decoder[Any] = attrs.field(
        init=False, eq=False, repr=False, factory=msgspec.json.Decoder
    )
    _encode: Callable[[Any], bytes] = attrs.field(
        init=False,
        eq=False,
        repr=False,
        default=attrs.Factory(lambda self: _json_encode(self._encoder.encode), takes_self=True),
    )

    def encode(self, obj: Any) -> bytes:
        try:
            return self._encode(obj)
        except (TypeError, ValueError, OverflowError) as exc:
            msg = f"codec 'json' cannot encode it: {exc}"
            raise SerializationError(msg, action="encode") from exc

    def decode(self, data: bytes) -> Any:
        try:
            return self._decoder.decode(data)
        except (msgspec.DecodeError, TypeError) as exc:
            raise decode_error(exc) from exc


def _json_encode(encode: Callable[[Any], bytes]) -> Callable[[Any], bytes]:
    """`encode`, or when a record class writes metadata, `encode` that lets records do so."""
    if not metadata_in_use():
        return encode

    def encode_records(obj: Any) -> bytes:
        if isinstance(obj, Record):
            return json_encoder(type(obj))(obj)
        return encode(obj)

    return encode_records


@attrs.frozen
class RecordCodec:
    """JSON decoded straight into a Record class by msgspec, checking every field type.

    Faust's `__faust` metadata in the input is ignored by msgspec like any unknown key, so
    it costs the fast path nothing; it is written when the class has `include_metadata=True`.
    """

    cls: type[Record]
    _encode: Callable[[Any], bytes] = attrs.field(
        init=False,
        eq=False,
        repr=False,
        default=attrs.Factory(lambda self: json_encoder(self.cls), takes_self=True),
    )
    _decode: Callable[[bytes], Any] = attrs.field(
        init=False,
        eq=False,
        repr=False,
        default=attrs.Factory(lambda self: json_decoder(self.cls).decode, takes_self=True),
    )

    @property
    def name(self) -> str:
        return f"json<{self.cls.__name__}>"

    def encode(self, obj: Any) -> bytes:
        encode = self._encode
        if type(obj) is not self.cls:
            if not isinstance(obj, self.cls):
                raise _wrong_type(self.name, self.cls.__name__, obj)
            encode = json_encoder(type(obj))  # a subclass: its own fields and metadata
        try:
            return encode(obj)
        except (TypeError, ValueError, OverflowError) as exc:
            reason = f"codec {self.name!r} cannot encode this {self.cls.__name__}: {exc}"
            raise SerializationError(reason, action="encode") from exc

    def decode(self, data: bytes) -> Any:
        try:
            return self._decode(data)
        except (msgspec.DecodeError, TypeError, ValueError) as exc:
            raise decode_error(exc) from exc


# Ext type codes of the "auto" codec. Stored data depends on them: never renumber.
_EXT_TUPLE = 1
_EXT_RECORD = 2
_EXT_DATETIME = 3
_EXT_BIGINT = 4
_EXT_DICT = 5  # a dict with keys msgpack maps cannot hold (tuples, records, ...)
_EXT_SET = 6
_EXT_FROZENSET = 7
_EXT_DECIMAL = 8

_INT_MIN = -(2**63)
_INT_MAX = 2**64 - 1
_PLAIN_KEYS = frozenset({str, int, float, bytes, bool, type(None)})
_FLAT = _PLAIN_KEYS - {int}
"""Types msgpack round-trips exactly by itself (ints too, within 64 bits: checked apart)."""

# The bytes msgpack puts before an Ext record payload of each length below 256, taken from
# msgspec itself, so a record at the top level skips building and encoding an Ext object.
_RECORD_EXT_HEADERS: tuple[bytes, ...] = tuple(
    msgspec.msgpack.encode(msgspec.msgpack.Ext(_EXT_RECORD, bytes(n)))[: -n or None]
    for n in range(256)
)


@attrs.frozen
class _RecordLayout:
    """What the "auto" codec writes for every record of one class, worked out once.

    `plain` holds when every field is an `__init__` argument named as the field, so that
    msgspec's own encoding of the (attrs) record is the map the codec writes.
    """

    name: str
    names: tuple[str, ...]
    aliases: tuple[str, ...]
    plain: bool

    @classmethod
    def of(cls, rtype: type[Record]) -> _RecordLayout:
        fields = [a for a in attrs.fields(rtype) if a.init]
        every = [a.name for a in attrs.fields(rtype)]
        names = tuple(a.name for a in fields)
        aliases = tuple(a.alias for a in fields)
        plain = names == aliases and list(names) == every
        return cls(record_name(rtype), names, aliases, plain)


@attrs.frozen
class AutoCodec:
    """Self-describing MessagePack for internal topics and stores where no type is declared.

    Round-trips exactly (equal value, same type): None, bool, int of any size, float,
    str, bytes, list, dict (any hashable keys), tuple, set, frozenset, datetime (naive or
    with its UTC offset), Decimal and Records, nested in any way. A record is written with its
    class name ("module.qualname") and its fields; decoding needs that class imported.
    Subclasses of the builtins come back as the builtin (an IntEnum as int, a namedtuple
    as tuple); other types raise `SerializationError`.
    """

    name = "auto"
    _encoder: msgspec.msgpack.Encoder = attrs.field(
        init=False, eq=False, repr=False, factory=msgspec.msgpack.Encoder
    )
    _decoder: msgspec.msgpack.Decoder[Any] = attrs.field(
        init=False,
        eq=False,
        repr=False,
        default=attrs.Factory(
            lambda self: msgspec.msgpack.Decoder(ext_hook=self._ext_hook), takes_self=True
        ),
    )
    _layouts: dict[type, _RecordLayout] = attrs.field(
        init=False, eq=False, repr=False, factory=dict
    )

    def encode(self, obj: Any) -> bytes:
        try:
            t = type(obj)
            if t in _FLAT or (t is int and _INT_MIN <= obj <= _INT_MAX):
                return self._encoder.encode(obj)  # counts and other scalars: nothing to prepare
            layout = self._layouts.get(t)
            if layout is not None:  # a record class seen before: skip the Ext object
                payload = self._record_payload(obj, layout)
                if len(payload) < 256:
                    return _RECORD_EXT_HEADERS[len(payload)] + payload
                return self._encoder.encode(msgspec.msgpack.Ext(_EXT_RECORD, payload))
            return self._encoder.encode(self._prepare(obj))
        except (TypeError, ValueError, OverflowError) as exc:
            if isinstance(exc, SerializationError):
                raise
            msg = f"codec 'auto' cannot encode it: {exc}"
            raise SerializationError(msg, action="encode") from exc

    def decode(self, data: bytes) -> Any:
        try:
            return self._decoder.decode(data)
        except SerializationError:
            raise
        except (msgspec.DecodeError, TypeError, ValueError) as exc:
            raise decode_error(exc) from exc

    def _prepare(self, obj: Any) -> Any:
        """`obj` with everything msgpack would not give back as is wrapped in an Ext."""
        t = type(obj)
        if t is str or t is float or t is bool or obj is None or t is bytes:
            return obj
        if t is int:
            if _INT_MIN <= obj <= _INT_MAX:
                return obj
            size = (obj.bit_length() + 8) // 8  # + 1 bit for the sign
            return msgspec.msgpack.Ext(_EXT_BIGINT, obj.to_bytes(size, "big", signed=True))
        if t is list:
            return [self._prepare(v) for v in obj]
        if t is dict:
            return self._prepare_dict(obj)
        if t is tuple:
            for v in obj:
                tv = type(v)
                if tv not in _FLAT and (tv is not int or not _INT_MIN <= v <= _INT_MAX):
                    return self._ext(_EXT_TUPLE, [self._prepare(v) for v in obj])
            # only scalars msgpack gives back as they are (window store keys): no recursion
            return msgspec.msgpack.Ext(_EXT_TUPLE, self._encoder.encode(obj))
        if isinstance(obj, Record):
            layout = self._layouts.get(t)
            if layout is None:
                layout = self._layouts[t] = _RecordLayout.of(t)
            return msgspec.msgpack.Ext(_EXT_RECORD, self._record_payload(obj, layout))
        if isinstance(obj, dt.datetime):
            if t is not dt.datetime:  # e.g. pandas.Timestamp, whose isoformat has nanoseconds
                obj = dt.datetime(*obj.timetuple()[:6], obj.microsecond, obj.tzinfo, fold=obj.fold)
            return msgspec.msgpack.Ext(_EXT_DATETIME, obj.isoformat().encode())
        if t is set or t is frozenset:
            code = _EXT_SET if t is set else _EXT_FROZENSET
            return self._ext(code, [self._prepare(v) for v in obj])
        if t is decimal.Decimal:
            return msgspec.msgpack.Ext(_EXT_DECIMAL, str(obj).encode())
        return self._prepare(_as_builtin(obj))

    def _record_payload(self, obj: Any, layout: _RecordLayout) -> bytes:
        """The Ext payload of a record: `[name, {alias: value}]`, its fields prepared.

        Fields that msgpack writes as they are (str, float, bool, None, bytes, ints that fit
        64 bits) need no preparing. When all are such, and every field is written under its
        own name, msgspec writes the record itself (an attrs class: its fields in order) with
        no dict built; an int beyond 64 bits makes it refuse, and the record then goes field
        by field.
        """
        if layout.plain:
            for v in obj.__dict__.values():
                if type(v) not in _PLAIN_KEYS:
                    break
            else:
                try:
                    return self._encoder.encode([layout.name, obj])
                except OverflowError:
                    pass
        prepare = self._prepare
        fields = {}
        for alias, name in zip(layout.aliases, layout.names, strict=True):
            v = getattr(obj, name)
            fields[alias] = v if type(v) in _FLAT else prepare(v)
        return self._encoder.encode([layout.name, fields])

    def _prepare_dict(self, obj: dict[Any, Any]) -> Any:
        for k in obj:
            t = type(k)
            if t not in _PLAIN_KEYS or (t is int and not _INT_MIN <= k <= _INT_MAX):
                pairs = [[self._prepare(k), self._prepare(v)] for k, v in obj.items()]
                return self._ext(_EXT_DICT, pairs)
        return {k: self._prepare(v) for k, v in obj.items()}

    def _ext(self, code: int, payload: Any) -> msgspec.msgpack.Ext:
        return msgspec.msgpack.Ext(code, self._encoder.encode(payload))

    def _ext_hook(self, code: int, data: memoryview) -> Any:
        if code == _EXT_RECORD:  # the most common by far: first
            name, fields = self._decoder.decode(data)
            cls = record_class(name)
            if cls is None:
                reason = (
                    f"no Record class {name!r} is defined in this process; "
                    "import the module that defines it before decoding"
                )
                raise SerializationError(reason)
            try:
                return cls(**fields)
            except TypeError:
                return _refit_record(cls, fields)
        if code == _EXT_TUPLE:
            return tuple(self._decoder.decode(data))
        if code == _EXT_DATETIME:
            return dt.datetime.fromisoformat(str(data, "ascii"))
        if code == _EXT_BIGINT:
            return int.from_bytes(data, "big", signed=True)
        if code == _EXT_DICT:
            return dict(map(tuple, self._decoder.decode(data)))
        if code == _EXT_SET:
            return set(self._decoder.decode(data))
        if code == _EXT_FROZENSET:
            return frozenset(self._decoder.decode(data))
        if code == _EXT_DECIMAL:
            return decimal.Decimal(str(data, "ascii"))
        msg = f"unknown MessagePack extension type {code}"
        raise SerializationError(msg)


def _refit_record(cls: type[Record], fields: dict[str, Any]) -> Record:
    """Record from stored fields that its class refused: fields the class no longer has are
    dropped, as in JSON."""
    known = {a.alias for a in attrs.fields(cls) if a.init}
    try:
        return cls(**{k: v for k, v in fields.items() if k in known})
    except TypeError as exc:
        reason = f"stored fields do not fit Record {cls.__qualname__}: {exc}"
        raise SerializationError(reason) from exc


_BUILTIN_BASES: tuple[type, ...] = (
    bool, int, float, str, bytes, list, tuple, dict, set, frozenset
)  # fmt: skip


def _as_builtin(obj: Any) -> Any:
    """A subclass of a builtin as that builtin; anything else is an error."""
    for base in _BUILTIN_BASES:
        if isinstance(obj, base):
            return base(obj)
    supported = (
        "None, bool, int, float, str, bytes, list, dict, tuple, set, frozenset, datetime, "
        "Decimal, Record"
    )
    reason = (
        f"codec 'auto' cannot encode {type(obj).__module__}.{type(obj).__qualname__}; "
        f"it takes {supported}; convert the value or declare a Record for it"
    )
    raise SerializationError(reason, action="encode")


_BY_NAME: dict[str, Callable[[], Codec]] = {
    "raw": RawCodec,
    "str": StrCodec,
    "int": IntCodec,
    "float": FloatCodec,
    "json": JsonCodec,
    "auto": AutoCodec,
}
_BY_TYPE: dict[Any, Callable[[], Codec]] = {
    None: RawCodec,
    bytes: RawCodec,
    str: StrCodec,
    int: IntCodec,
    float: FloatCodec,
}


def codec_for(spec: Any) -> Codec:
    """The codec for a declared key or value type, codec name, or codec.

    Not cached: this runs when a graph is built, not per record, and a `RecordCodec`
    reuses the decoder its class keeps.
    """
    if isinstance(spec, type) and issubclass(spec, Record) and spec is not Record:
        return RecordCodec(spec)
    if isinstance(spec, str) and spec in _BY_NAME:
        return _BY_NAME[spec]()
    if spec is None or isinstance(spec, type):
        make = _BY_TYPE.get(spec)
        if make is not None:
            return make()
    elif not isinstance(spec, str) and isinstance(spec, Codec):
        return spec
    given = spec.__qualname__ if isinstance(spec, type) else repr(spec)
    msg = (
        f"no codec for {given}: a key or value type must be a Record subclass, "
        "None or bytes (raw), str, int, float, one of the names "
        f"{', '.join(repr(n) for n in _BY_NAME)}, or a Codec instance"
    )
    raise ConfigurationError(msg)


def fast_decoder(codec: Codec) -> Callable[[bytes], Any]:
    """The quickest callable decoding what `codec.decode` does, for the runtime's hot loop.

    It may raise any exception on bad input; the caller then calls `codec.decode` on the same
    bytes to get the proper `SerializationError`. This keeps error wrapping off the fast path.
    """
    if isinstance(codec, RecordCodec):
        return codec._decode
    if isinstance(codec, StrCodec):
        return bytes.decode
    if isinstance(codec, AutoCodec):
        return codec._decoder.decode
    fast: Callable[[bytes], Any] | None = getattr(codec, "fast_decode", None)
    return codec.decode if fast is None else fast
