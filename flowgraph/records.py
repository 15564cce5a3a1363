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
"""

from __future__ import annotations

import copy
import functools
import inspect
import re
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, dataclass_transform, get_origin

import attrs
import msgspec

from flowgraph.errors import ConfigurationError, SerializationError

__all__ = ["Field", "Record"]

_R = TypeVar("_R", bound="Record")

# Every Record class by "module.qualname". The "auto" codec writes this name next to a
# record's fields (internal topics and stores declare no type), and needs the class back
# when decoding. Redefining a class (a re-run notebook cell) replaces the entry.
_registry: dict[str, type[Record]] = {}

# Default values that must not be shared between instances.
_MUTABLE_DEFAULTS = (list, dict, set, bytearray)

_json_encoder = msgspec.json.Encoder()


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
    if TYPE_CHECKING:  # set by attrs on every subclass; lets mypy pass them to attrs.fields()
        __attrs_attrs__: ClassVar[Any]

    def __init_subclass__(
        cls, *, frozen: bool | None = None, kw_only: bool = False, **kwargs: Any
    ) -> None:
        super().__init_subclass__(**kwargs)
        if frozen is None:
            frozen = cls._fg_frozen  # a subclass of a frozen record stays frozen
        _copy_mutable_defaults(cls)
        try:
            built = attrs.define(cls, slots=False, frozen=frozen, kw_only=kw_only, unsafe_hash=True)
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
        """JSON bytes of this record, as written to a topic."""
        return _json_encoder.encode(self)

    @classmethod
    def decode(cls: type[_R], data: bytes) -> _R:
        """Record from JSON bytes; `SerializationError` names the bad field."""
        decoder = json_decoder(cls)
        try:
            out: _R = decoder.decode(data)
        except (msgspec.DecodeError, TypeError, ValueError) as exc:
            raise decode_error(exc) from exc
        return out


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
