"""Typed records: the value types of streams and tables.

A `Record` subclass is an ordinary attrs class, built in place when the subclass is
defined. attrs gives the constructor, value equality, a readable repr and hashing;
msgspec decodes JSON bytes straight into the class without an intermediate dict, which
is what makes typed topics fast.

    class Click(fg.Record):
        url: str
        user: str
        ts: float
        referrer: str | None = None
        tags: list[str] = []            # a mutable default becomes a per-instance copy

As in Faust, `Click.url` on the class is a field reference: a callable that reads the
field, usable as a key function (`stream.group_by(Click.url)`), named after the field.

Records speak Faust's JSON wire format (`faust.Record`): the metadata Faust adds,
`"__faust": {"ns": "module.Class"}`, is ignored when decoding (msgspec skips unknown keys,
so the fast path is untouched) and written when a class asks for it with
`include_metadata=True`. Faust's methods (`asdict`, `to_representation`, `dumps`,
`loads`, `from_data`) and its `validation=True` option are here too.
"""

from __future__ import annotations

import copy
import datetime as dt
import decimal
import functools
import inspect
import re
import sys
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, dataclass_transform, get_origin

import attrs
import msgspec

from flowgraph.errors import ConfigurationError, SerializationError

__all__ = ["Field", "Record", "ValidationError"]

_R = TypeVar("_R", bound="Record")

# Every Record class by "module.qualname". The "auto" codec writes this name next to a
# record's fields (internal topics and stores declare no type), and needs the class back
# when decoding. Redefining a class (a re-run notebook cell) replaces the entry.
_registry: dict[str, type[Record]] = {}

# Default values that must not be shared between instances.
_MUTABLE_DEFAULTS = (list, dict, set, bytearray)

_json_encoder = msgspec.json.Encoder()

# Faust's name for the metadata key ("the blessed key"): {"__faust": {"ns": namespace}}.
METADATA_KEY = "__faust"
_metadata_used = False  # set when a Record class with include_metadata=True is defined


def metadata_in_use() -> bool:
    """Whether any Record class defined so far writes Faust's metadata."""
    return _metadata_used


# Class options of `faust.Record` that flowgraph refuses by name (see `__init_subclass__`).
_FAUST_ONLY_OPTIONS = (
    "abstract", "allow_blessed_key", "polymorphic_fields", "date_parser", "lazy_creation",
    "coercions",
)  # fmt: skip


def record_name(cls: type[Record]) -> str:
    """Name under which `cls` is registered (and written by the "auto" codec)."""
    return f"{cls.__module__}.{cls.__qualname__}"


def record_class(name: str) -> type[Record] | None:
    """The Record class registered as `name`, if its module has been imported."""
    return _registry.get(name)


class Field:
    """What `Click.url` is on the class: a named, callable reference to one field.

    Instances keep their values in `__dict__`, which wins over this non-data
    descriptor, so reading `click.url` costs nothing extra.
    """

    __slots__ = ("__name__", "name", "record")

    def __init__(self, record: type[Record], name: str) -> None:
        self.record = record
        self.name = name
        self.__name__ = name  # a key function named like the field names its step

    def __get__(self, obj: object, objtype: type | None = None) -> Any:
        if obj is None:
            return self
        # Only reached when the instance has no value yet (e.g. inside __attrs_pre_init__).
        msg = f"{type(obj).__name__}.{self.name} is not set yet"
        raise AttributeError(msg)

    def __call__(self, record: Any) -> Any:
        return getattr(record, self.name)

    def __repr__(self) -> str:
        return f"<Field {self.record.__qualname__}.{self.name}>"


@dataclass_transform(field_specifiers=(attrs.field,))
class Record:
    """Base class of typed records; subclasses are attrs classes, decoded by msgspec.

    Equality and hashing go by value, as in Faust, so records can be table keys; do not
    mutate a record while it is one, or define it with `frozen=True` to forbid that
    (subclasses stay frozen; type checkers want them to say `frozen=True` too).
    `kw_only=True` makes the subclass's own fields keyword-only.
    """

    _fg_frozen: ClassVar[bool] = False
    _fg_decoder: ClassVar[Any] = None
    _fg_encoder: ClassVar[Any] = None
    _fg_include_metadata: ClassVar[bool] = False
    _fg_namespace: ClassVar[str] = ""
    _fg_validation: ClassVar[bool] = False
    if TYPE_CHECKING:  # set by attrs on every subclass; lets mypy pass them to attrs.fields()
        __attrs_attrs__: ClassVar[Any]

    def __init_subclass__(
        cls,
        *,
        frozen: bool | None = None,
        kw_only: bool = False,
        include_metadata: bool | None = None,
        namespace: str | None = None,
        validation: bool | None = None,
        serializer: str | None = None,
        coerce: bool | None = None,
        isodates: bool | None = None,
        decimals: bool | None = None,
        **kwargs: Any,
    ) -> None:
        """Faust's class options: `include_metadata`, `namespace`, `validation` act as in
        Faust, but `include_metadata` defaults to False (Faust: True), so existing topics
        stay plain JSON and Faust readers without a value type never meet a namespace
        they do not know. `serializer` may only be "json"; `isodates` and `decimals` are
        accepted and change nothing (datetimes and Decimals are always decoded);
        `coerce=True` is `validation=True`. Options Faust has and flowgraph does not are
        refused by name."""
        unsupported = [name for name in _FAUST_ONLY_OPTIONS if name in kwargs]
        if unsupported:
            msg = (
                f"Record {cls.__qualname__}: the Faust option {unsupported[0]!r} is not "
                "supported by flowgraph; remove it from the class statement"
            )
            raise TypeError(msg)
        if serializer is not None and serializer != "json":
            msg = (
                f"Record {cls.__qualname__}: serializer {serializer!r} is not supported; "
                "flowgraph writes Records as JSON (serializer='json', the default)"
            )
            raise TypeError(msg)
        super().__init_subclass__(**kwargs)
        if frozen is None:
            frozen = cls._fg_frozen  # a subclass of a frozen record stays frozen
        # As in Faust, include_metadata and validation are inherited; the namespace is not.
        if include_metadata is not None:
            cls._fg_include_metadata = include_metadata
        if validation is None and coerce:
            validation = True
        if validation is not None:
            cls._fg_validation = validation
        cls._fg_namespace = namespace or _canonical_name(cls)
        if cls._fg_include_metadata:
            global _metadata_used  # noqa: PLW0603 - read when codecs are made
            _metadata_used = True
        cls._fg_encoder = None  # never a parent's encoder
        _copy_mutable_defaults(cls)
        try:
            built = attrs.define(
                cls,
                slots=False,
                frozen=frozen,
                kw_only=kw_only,
                unsafe_hash=True,
                field_transformer=_add_coercion if cls._fg_validation else None,
            )
        except ValueError as exc:
            if not str(exc).startswith("No mandatory attributes allowed"):
                raise
            raise _field_order_error(cls, exc) from exc
        if built is not cls:  # slots=False patches the class in place; nothing else works here
            msg = f"attrs replaced Record class {cls.__qualname__}; please report this bug"
            raise RuntimeError(msg)
        cls._fg_frozen = frozen
        for a in attrs.fields(cls):
            setattr(cls, a.name, Field(cls, a.name))
        _registry[record_name(cls)] = cls

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible builtins: nested records become dicts, datetimes ISO 8601 strings."""
        out: dict[str, Any] = msgspec.to_builtins(self)
        return out

    @classmethod
    def from_dict(cls: type[_R], data: Any) -> _R:
        """Build a record from `to_dict()` output or parsed JSON, checking every type."""
        try:
            return msgspec.convert(data, cls)
        except msgspec.ValidationError as exc:
            raise decode_error(exc) from exc

    def encode(self) -> bytes:
        """JSON bytes of this record, as written to a topic (with Faust's metadata if the
        class has `include_metadata=True`)."""
        return json_encoder(type(self))(self)

    @classmethod
    def decode(cls: type[_R], data: bytes) -> _R:
        """Record from JSON bytes; `SerializationError` names the bad field."""
        decoder = json_decoder(cls)
        try:
            out: _R = decoder.decode(data)
        except (msgspec.DecodeError, TypeError, ValueError) as exc:
            raise decode_error(exc) from exc
        return out

    # Faust's methods, so code written for `faust.Record` runs unchanged.

    def asdict(self) -> dict[str, Any]:
        """Faust's shallow dict of the fields: nested records stay records."""
        return {a.name: getattr(self, a.name) for a in attrs.fields(type(self))}

    def to_representation(self) -> dict[str, Any]:
        """Faust's `asdict()` plus the `__faust` metadata when the class includes it."""
        payload = self.asdict()
        cls = type(self)
        if cls._fg_include_metadata:
            payload[METADATA_KEY] = {"ns": cls._fg_namespace}
        return payload

    def dumps(self, *, serializer: str | None = None) -> bytes:
        """Faust's name for `encode()`: the JSON bytes written to a topic."""
        _check_serializer(serializer)
        return json_encoder(type(self))(self)

    @classmethod
    def loads(
        cls: type[_R],
        s: bytes | str,
        *,
        default_serializer: str | None = None,
        serializer: str | None = None,
    ) -> _R:
        """Faust's name for `decode()`; `__faust` metadata in `s` is ignored."""
        _check_serializer(serializer or default_serializer)
        return cls.decode(s.encode() if isinstance(s, str) else s)

    @classmethod
    def from_data(cls: type[_R], data: Any, *, preferred_type: Any = None) -> _R:
        """Faust's name for `from_dict()`: a record from parsed JSON (metadata ignored)."""
        return cls.from_dict(data)


class ValidationError(SerializationError):
    """A field value of a `validation=True` record that is not of the field's type.

    Named like Faust's `faust.exceptions.ValidationError`, and a `ValueError` like it.
    """

    def __init__(self, record: str, field: str, reason: str) -> None:
        super().__init__(reason, field=field, part=f"{record} record", action="build")


def _check_serializer(serializer: str | None) -> None:
    if serializer is not None and serializer != "json":
        msg = f"serializer {serializer!r} is not supported; flowgraph Records are JSON"
        raise ConfigurationError(msg)


def json_encoder(cls: type[Record]) -> Callable[[Any], bytes]:
    """The class's JSON encoder, built on first use and kept on the class.

    Plain msgspec encoding unless metadata is to be written. A class with
    `include_metadata=True` whose fields hold no records gets the metadata appended to
    msgspec's bytes; when records its fields can hold (by their declared types, with the
    subclasses defined so far) write metadata, the record is first turned into dicts.
    """
    encoder = cls.__dict__.get("_fg_encoder")
    if encoder is None:
        encode = _json_encoder.encode
        if _nested_metadata(cls):

            def encoder(obj: Any) -> bytes:
                return encode(_with_metadata(obj))

        elif cls._fg_include_metadata:
            meta = encode({METADATA_KEY: {"ns": cls._fg_namespace}})[1:]
            comma_meta = b"," + meta

            def encoder(obj: Any) -> bytes:
                data = encode(obj)
                return data[:-1] + (meta if data == b"{}" else comma_meta)

        else:
            encoder = encode
        cls._fg_encoder = encoder
    return encoder


def _with_metadata(value: Any) -> Any:
    """`value` with each record a dict, carrying `__faust` if its class says so."""
    t = type(value)
    if isinstance(value, Record):
        out = {a.name: _with_metadata(getattr(value, a.name)) for a in attrs.fields(t)}
        if t._fg_include_metadata:
            out[METADATA_KEY] = {"ns": t._fg_namespace}
        return out
    if t is list or t is tuple or t is set or t is frozenset:
        return [_with_metadata(v) for v in value]
    if t is dict:
        return {k: _with_metadata(v) for k, v in value.items()}
    return value


def _nested_metadata(cls: type[Record]) -> bool:
    """Whether a record class reachable through the field types of `cls` (or a subclass of
    one, defined so far) includes metadata. Types that cannot be resolved count as yes:
    the dict-building encoder is right for every record. `Any` fields are not looked into."""
    seen: set[type] = set()
    todo: list[Any] = []
    try:
        todo.extend(typing.get_type_hints(cls).values())
    except Exception:  # any failure to resolve means "maybe"
        return True
    while todo:
        t = todo.pop()
        if isinstance(t, type) and issubclass(t, Record):
            if t in seen:
                continue
            seen.add(t)
            if t._fg_include_metadata:
                return True
            todo.extend(t.__subclasses__())
            try:
                todo.extend(typing.get_type_hints(t).values())
            except Exception:
                return True
        else:
            todo.extend(typing.get_args(t))
    return False


def _canonical_name(cls: type) -> str:
    """Faust's default namespace: "module.qualname", with the real name of `__main__`
    (as `mode.utils.objects.canoname` finds it: the script's dotted package path)."""
    module = cls.__module__
    if module == "__main__":
        module = _main_name()
    return f"{module}.{cls.__qualname__}"


def _main_name() -> str:
    try:
        filename = sys.modules["__main__"].__file__
    except (AttributeError, KeyError):  # a REPL
        return "__main__"
    if not filename:
        return "__main__"
    path = Path(filename).absolute()
    node = path.parent
    seen: list[str] = []
    while (node / "__init__.py").exists():
        seen.append(node.stem)
        node = node.parent
    return ".".join([*seen, path.stem])


def _add_coercion(cls: type, fields: list[attrs.Attribute[Any]]) -> list[attrs.Attribute[Any]]:
    """attrs field transformer of `validation=True` records: each field without a
    converter of its own gets one that checks (and converts, as Faust's coercion does)."""
    return [
        f if f.converter is not None else f.evolve(converter=_Coercion(cls, f.name)) for f in fields
    ]


# Types whose exact instances are accepted without calling msgspec.
_EXACT = frozenset({str, int, float, bool, bytes, dt.datetime, dt.date, decimal.Decimal})


class _Coercion:
    """Converter of one field of a `validation=True` record.

    Values of the field's exact type pass as they are; anything else goes through
    `msgspec.convert` in lax mode (so 3 becomes 3.0 for a float field and "3" becomes 3
    for an int field, as Faust's coercion does) or raises `ValidationError`. Built on first
    use, since field types may name classes defined later. msgspec's decoding does not
    call converters: decoded records are already checked.
    """

    __slots__ = ("check", "exact", "name", "record", "type")

    def __init__(self, record: type, name: str) -> None:
        self.record = record
        self.name = name
        self.type: Any = None
        self.exact: tuple[type, ...] = ()
        self.check: Callable[[Any], bool] | None = None

    def __call__(self, value: Any) -> Any:
        if self.type is None:
            self._build()
        if type(value) in self.exact or (self.check is not None and self.check(value)):
            return value
        try:
            return msgspec.convert(value, self.type, strict=False)
        except msgspec.ValidationError as exc:
            reason = decode_error(exc).reason
            raise ValidationError(self.record.__qualname__, self.name, reason) from None

    def _build(self) -> None:
        try:
            t = typing.get_type_hints(self.record)[self.name]
        except NameError as exc:
            msg = (
                f"Record {self.record.__qualname__} cannot check field {self.name!r}: its "
                f"type is unknown ({exc}); define or import it in module "
                f"{self.record.__module__}"
            )
            raise ConfigurationError(msg) from exc
        options = list(typing.get_args(t)) if _is_union(t) else [t]
        exact = [o for o in options if o in _EXACT or o is type(None)]
        records = tuple(o for o in options if isinstance(o, type) and issubclass(o, Record))
        if t is Any or object in options:
            self.check = _always
        elif records:
            self.check = functools.partial(_is_instance, records)
        self.exact = tuple(exact)
        self.type = t


def _is_union(t: Any) -> bool:
    return get_origin(t) in (typing.Union, types.UnionType)


def _is_instance(classes: tuple[type, ...], value: Any) -> bool:
    return isinstance(value, classes)


def _always(value: Any) -> bool:
    return True


def json_decoder(cls: type[_R]) -> msgspec.json.Decoder[_R]:
    """The class's JSON decoder, built on first use and kept on the class.

    Built lazily because field types may name records defined later in the module.
    """
    decoder = cls.__dict__.get("_fg_decoder")  # own dict: never a parent's decoder
    if decoder is None:
        try:
            decoder = msgspec.json.Decoder(cls)
        except NameError as exc:
            msg = (
                f"Record {cls.__qualname__} cannot be decoded from JSON: a field type is "
                f"unknown ({exc}); define or import it in module {cls.__module__}"
            )
            raise ConfigurationError(msg) from exc
        except TypeError as exc:
            msg = (
                f"Record {cls.__qualname__} cannot be decoded from JSON: {exc}; use field types "
                "msgspec supports (str, int, float, bool, bytes, datetime, list, dict, X | None, "
                "Records) or declare another codec"
            )
            raise ConfigurationError(msg) from exc
        cls._fg_decoder = decoder
    return decoder


def _copy_mutable_defaults(cls: type) -> None:
    """Turn `tags: list[str] = []` into a factory, so instances do not share one list."""
    own = inspect.get_annotations(cls)
    for name, annotation in own.items():
        default = cls.__dict__.get(name)
        if isinstance(default, _MUTABLE_DEFAULTS) and not _is_classvar(annotation):
            factory: Any = (
                type(default) if not default else functools.partial(copy.deepcopy, default)
            )
            setattr(cls, name, attrs.field(factory=factory))


def _is_classvar(annotation: Any) -> bool:
    if isinstance(annotation, str):
        return annotation.startswith(("ClassVar", "typing.ClassVar", "t.ClassVar"))
    return annotation is ClassVar or get_origin(annotation) is ClassVar


def _field_order_error(cls: type, exc: ValueError) -> TypeError:
    found = re.search(r"name='([^']+)'", str(exc))
    field = found.group(1) if found else "?"
    msg = (
        f"Record {cls.__qualname__}: field {field!r} has no default but comes after a field "
        "with one (inherited fields come first); give it a default, or define the class "
        "with `kw_only=True`"
    )
    return TypeError(msg)


_AT_PATH = re.compile(r"^(?P<reason>.*) - at `\$(?P<path>[^`]*)`$", re.DOTALL)
_MISSING = re.compile(r"missing required field `(?P<name>[^`]+)`")


def decode_error(exc: Exception) -> SerializationError:
    """Translate a msgspec (or codec) error into `SerializationError` with the field path.

    msgspec ends validation messages with " - at `$.items[0].url`"; that path becomes the
    field ("items[0].url"), and the rest, first word lower-cased, the reason.
    """
    text = str(exc)
    path = None
    found = _AT_PATH.match(text)
    if found:
        text, path = found["reason"], found["path"]
    missing = _MISSING.search(text)
    if missing:
        path = f"{path or ''}.{missing['name']}"
    first = text.split(" ", 1)[0]
    if first[:1].isupper() and first[1:].islower():
        text = text[:1].lower() + text[1:]
    field = path.removeprefix(".") if path else None
    return SerializationError(text, field=field)
