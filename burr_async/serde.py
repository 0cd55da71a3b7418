"""Encoding State to JSON and back.

The default :class:`OrjsonSerde` writes plain JSON with orjson and tags the values JSON cannot
represent so that they come back as equal values: datetimes, dates, times, Decimals, bytes, sets,
frozensets and pydantic models at any depth, and UUIDs held directly as state values (a UUID
nested inside a list or dict is written as its string). Any other object is a
:class:`~burr_async.errors.SerializationError` naming the state key, before anything is written.

What JSON changes on the way (as with any JSON store): tuples come back as lists (except inside
sets), enums as their values, dataclasses as dicts, ``bytearray`` as ``bytes``, and NaN or
infinity as ``None``; Postgres ``JSONB`` also reorders dict keys and refuses strings containing
NUL. A dict of exactly the shape ``{"__burr_async__": <kind>, "value": ...}`` is reserved for
the tags above.
"""

from __future__ import annotations

import base64
import datetime as dt
import importlib
import uuid
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Protocol, runtime_checkable

import orjson

from burr_async.errors import SerializationError
from burr_async.state import State

__all__ = ["OrjsonSerde", "Serde"]

_TAG = "__burr_async__"
_TAG_BYTES = _TAG.encode()
_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME


@runtime_checkable
class Serde(Protocol):
    """Turns a state's values into JSON bytes and back. ``loads(dumps(v)) == v`` must hold for
    every value the serde accepts; ``dumps`` raises SerializationError for any other."""

    def dumps(self, values: Mapping[str, Any]) -> bytes:
        """Encode a mapping of state keys to values as a JSON object."""
        ...

    def loads(self, data: bytes | str) -> dict[str, Any]:
        """Decode what ``dumps`` produced."""
        ...


def _tag(kind: str, value: Any) -> dict[str, Any]:
    return {_TAG: kind, "value": value}


def _default(obj: Any) -> Any:
    if isinstance(obj, dt.datetime):
        return _tag("datetime", obj.isoformat())
    if isinstance(obj, dt.date):
        return _tag("date", obj.isoformat())
    if isinstance(obj, dt.time):
        return _tag("time", obj.isoformat())
    if isinstance(obj, Decimal):
        return _tag("decimal", str(obj))
    if isinstance(obj, bytes | bytearray):
        return _tag("bytes", base64.b64encode(obj).decode())
    if isinstance(obj, frozenset):
        return _tag("frozenset", list(obj))
    if isinstance(obj, set):
        return _tag("set", list(obj))
    dump = getattr(obj, "model_dump", None)
    if dump is not None and hasattr(type(obj), "model_validate"):
        cls = type(obj)
        return _tag(
            "pydantic", {"cls": f"{cls.__module__}:{cls.__qualname__}", "data": dump(mode="json")}
        )
    raise TypeError(f"Type is not JSON serializable: {type(obj).__qualname__}")


def _load_model(spec: Mapping[str, Any]) -> Any:
    module_name, _, qualname = str(spec["cls"]).partition(":")
    try:
        target: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise SerializationError(
            f"Stored state holds a {spec['cls']!r} pydantic model, but that class cannot be "
            f"imported here ({exc}). Keep the class importable under that name (or alias it "
            "there) to load this state."
        ) from exc
    if not hasattr(target, "model_validate"):
        raise SerializationError(
            f"Stored value names {spec['cls']!r}, which is not a pydantic model."
        )
    return target.model_validate(spec["data"])


_DECODERS: dict[str, Any] = {
    "datetime": dt.datetime.fromisoformat,
    "date": dt.date.fromisoformat,
    "time": dt.time.fromisoformat,
    "decimal": Decimal,
    "bytes": base64.b64decode,
    "uuid": uuid.UUID,
    "pydantic": _load_model,
}


def _hashable(value: Any) -> Any:
    """A set member back from JSON: a list there can only have been a tuple."""
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    return value


def _untag(value: Any) -> Any:
    if isinstance(value, list):
        return [_untag(v) for v in value]
    if isinstance(value, dict):
        kind = value.get(_TAG)
        if kind is not None and len(value) == 2 and "value" in value:
            inner = value["value"]
            if kind == "set":
                return {_hashable(_untag(v)) for v in inner}
            if kind == "frozenset":
                return frozenset(_hashable(_untag(v)) for v in inner)
            decoder = _DECODERS.get(kind)
            if decoder is not None:
                return decoder(inner)
        return {k: _untag(v) for k, v in value.items()}
    return value


class OrjsonSerde:
    """The default serde (see the module docstring for what round-trips)."""

    __slots__ = ()

    def dumps(self, values: Mapping[str, Any]) -> bytes:
        data = values._data if isinstance(values, State) else values
        if any(type(value) is uuid.UUID for value in values.values()):
            data = {
                k: _tag("uuid", str(v)) if type(v) is uuid.UUID else v for k, v in values.items()
            }
        try:
            return orjson.dumps(data, default=_default, option=_OPTIONS)
        except (TypeError, orjson.JSONEncodeError) as exc:
            raise self._explain(values, exc) from exc

    def loads(self, data: bytes | str) -> dict[str, Any]:
        try:
            decoded = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise SerializationError(f"Stored state is not valid JSON: {exc}") from exc
        if not isinstance(decoded, dict):
            raise SerializationError(
                f"Stored state must be a JSON object, found {type(decoded).__name__}."
            )
        tagged = _TAG_BYTES in data if isinstance(data, bytes) else _TAG in data
        if tagged:
            return {k: _untag(v) for k, v in decoded.items()}
        return decoded

    @staticmethod
    def _explain(values: Mapping[Any, Any], exc: Exception) -> SerializationError:
        for key, value in values.items():
            if not isinstance(key, str):
                return SerializationError(
                    f"State key {key!r} is a {type(key).__name__}; state keys must be strings.",
                    key=str(key),
                )
            try:
                orjson.dumps(value, default=_default, option=_OPTIONS)
            except (TypeError, orjson.JSONEncodeError) as inner:
                return SerializationError(
                    f"State key {key!r} holds a value that cannot be serialized "
                    f"({type(value).__name__}: {inner}). Store JSON-compatible data (or a pydantic "
                    "model, datetime, Decimal, bytes, set), or pass a custom serde to the "
                    "persister. Nothing was written.",
                    key=key,
                )
        return SerializationError(f"State could not be serialized: {exc}. Nothing was written.")
