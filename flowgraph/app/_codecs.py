"""The codec of a Faust topic: its declared type read through Faust's serializer names.

Faust encodes keys with ``raw`` and values with ``json`` unless told otherwise, whatever
the type, so ``value_type=str`` on a Faust topic is the JSON string ``"abc"``, not the bytes
``abc``. Records are JSON either way (`fg.Record`).
"""

from __future__ import annotations

from typing import Any

import attrs
import msgspec

from flowgraph.errors import ConfigurationError, SerializationError
from flowgraph.records import Record, decode_error
from flowgraph.serde import Codec, JsonCodec, RawCodec, StrCodec, codec_for

__all__ = ["TypedJsonCodec", "faust_codec"]

_JSON_TYPES = (str, int, float, bool, list, dict)


@attrs.frozen
class TypedJsonCodec:
    """JSON holding one builtin type (Faust's ``json`` serializer with ``value_type=int``)."""

    type: Any
    _decoder: Any = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "_decoder", msgspec.json.Decoder(self.type))

    @property
    def name(self) -> str:
        return f"json<{self.type.__name__}>"

    def encode(self, obj: Any) -> bytes:
        if not isinstance(obj, self.type) or (isinstance(obj, bool) and self.type is not bool):
            msg = f"codec {self.name!r} expects {self.type.__name__}, got {type(obj).__name__}"
            raise SerializationError(msg, action="encode")
        return msgspec.json.encode(obj)

    @property
    def fast_decode(self) -> Any:
        """The bare msgspec decoder, for the runtime's hot loop (see `fast_decoder`)."""
        return self._decoder.decode

    def decode(self, data: bytes) -> Any:
        try:
            return self._decoder.decode(data)
        except (msgspec.DecodeError, TypeError) as exc:
            raise decode_error(exc) from exc


def faust_codec(declared: Any, serializer: str | None) -> Codec:
    """The codec of a topic part declared with type `declared` and Faust `serializer`."""
    if isinstance(declared, type) and issubclass(declared, Record):
        return codec_for(declared)
    if declared is not None and not isinstance(declared, type):
        return codec_for(declared)  # a codec, or a flowgraph codec name
    if serializer == "raw":
        if declared in (None, bytes):
            return RawCodec()
        if declared is str:
            return StrCodec()
        return codec_for(declared)
    if serializer == "json":
        if declared is None:
            return JsonCodec()
        if declared in _JSON_TYPES:
            return TypedJsonCodec(declared)
        return codec_for(declared)
    if serializer is None:
        return codec_for(declared)
    try:
        return codec_for(serializer)
    except ConfigurationError:
        msg = (
            f"serializer {serializer!r} is not supported; use 'json' or 'raw', a Record "
            "value_type, or a flowgraph codec name"
        )
        raise ConfigurationError(msg) from None
