"""Encoding State to JSON and back.

The default :class:`OrjsonSerde` writes plain JSON with orjson and tags the values JSON cannot
represent so that they come back as equal values: datetimes, dates, times, Decimals, bytes, sets,
frozensets and registered pydantic models at any depth, and UUIDs held directly as state values
(a UUID nested inside a list or dict is written as its string). Any other object is a
:class:`~burr_async.errors.SerializationError` naming the state key, before anything is written.

A tag is a dict ``{"__burr_async__": <kind>, "value": ...}``. Any JSON value round-trips equal,
including dicts that use the ``"__burr_async__"`` key themselves: such a dict is written wrapped
in an escape tag, ``{"__burr_async__": "dict", "value": <the dict>}``, whose keys are read back
literally. So every dict holding the tag key in a stored row was written by the serde as a tag,
and anything else in that place (an unknown kind, a value of the wrong type, an invalid date,
bad base64...) is a malformed row: ``loads`` raises SerializationError naming the state key.

Stored data is untrusted input, and nothing read from it decides which code runs: a pydantic
model is rebuilt only from a class the application registered (``OrjsonSerde(models=[...])``),
or, as an explicit opt-in, one importable from a module under ``allowed_modules``. A stored class
name is never imported otherwise.

What JSON changes on the way (as with any JSON store): tuples come back as lists (except inside
sets), enums as their values, dataclasses as dicts, ``bytearray`` as ``bytes``, and NaN or
infinity as ``None``; Postgres ``JSONB`` also reorders dict keys and refuses strings containing
NUL.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import importlib
import re
import secrets
import uuid
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol, runtime_checkable

import orjson

from burr_async.errors import ConfigurationError, SerializationError
from burr_async.state import State

__all__ = ["OrjsonSerde", "Serde"]

_TAG = "__burr_async__"
_TAG_BYTES = _TAG.encode()
# The tag key as orjson writes it as a dict key. Inside a string the quotes would be escaped
# (``\"``), so every occurrence but a rare false positive is a dict key.
_TAG_KEY_BYTES = b'"' + _TAG_BYTES + b'":'
_ESCAPE = "dict"  # the kind of a user dict that holds the tag key itself
_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME
_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
_REPR_LIMIT = 120
_NESTED = (dict, list)  # the JSON types a tag can be inside


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


class _Refused(TypeError):
    """Raised by the encoder for a value it will not write; the message says why."""


class _Malformed(Exception):
    """Raised while decoding a stored value that ``dumps`` cannot have written; ``loads`` turns
    it into a SerializationError naming the state key."""


class _Unloadable(_Malformed):
    """Raised while decoding a well-formed pydantic tag this serde cannot rebuild: its class is
    not registered (or not importable from an allowed module), or its data no longer validates."""


def _cut(text: str) -> str:
    """``text`` cut short: stored data can be large, and it goes into a message."""
    return text if len(text) <= _REPR_LIMIT else text[: _REPR_LIMIT - 3] + "..."


def _short(value: Any) -> str:
    """``repr(value)``, cut short."""
    return _cut(repr(value))


def _class_name(cls: type) -> str:
    """The name a pydantic model's class is stored under: ``module:QualifiedName``."""
    return f"{cls.__module__}:{cls.__qualname__}"


def _is_model_class(obj: Any) -> bool:
    """Whether ``obj`` is a class shaped like a pydantic v2 model."""
    return isinstance(obj, type) and hasattr(obj, "model_validate") and hasattr(obj, "model_dump")


class _Encoder:
    """orjson's ``default=`` hook for one encoding: turns each value JSON cannot hold into a tag
    keyed by ``key`` and counts the tags it made, so that ``dumps`` can tell its own tags from
    user dicts that hold the tag key (see ``OrjsonSerde._encode``)."""

    __slots__ = ("key", "serde", "tags")

    def __init__(self, serde: OrjsonSerde, key: str) -> None:
        self.serde = serde
        self.key = key
        self.tags = 0

    def tag(self, kind: str, value: Any) -> dict[str, Any]:
        """One tag, counted."""
        self.tags += 1
        return {self.key: kind, "value": value}

    def top_level(self, data: Mapping[str, Any]) -> Mapping[str, Any]:
        """``data`` with its UUID values tagged (orjson writes a UUID natively, as a string, so
        ``default`` never sees one)."""
        if not any(type(value) is uuid.UUID for value in data.values()):
            return data
        return {k: self.tag("uuid", str(v)) if type(v) is uuid.UUID else v for k, v in data.items()}

    def encode(self, obj: Any) -> Any:
        """The tag standing for ``obj``; _Refused for a value this serde does not write."""
        kind: str
        value: Any
        if isinstance(obj, dt.datetime):
            kind, value = "datetime", obj.isoformat()
        elif isinstance(obj, dt.date):
            kind, value = "date", obj.isoformat()
        elif isinstance(obj, dt.time):
            kind, value = "time", obj.isoformat()
        elif isinstance(obj, Decimal):
            kind, value = "decimal", str(obj)
        elif isinstance(obj, bytes | bytearray):
            kind, value = "bytes", base64.b64encode(obj).decode()
        elif isinstance(obj, frozenset):
            kind, value = "frozenset", list(obj)
        elif isinstance(obj, set):
            kind, value = "set", list(obj)
        elif _is_model_class(type(obj)):
            name = self.serde._writable_name(type(obj))
            kind, value = "pydantic", {"cls": name, "data": obj.model_dump(mode="json")}
        else:
            raise _Refused(f"Type is not JSON serializable: {type(obj).__qualname__}")
        self.tags += 1
        return {self.key: kind, "value": value}


def _escape(value: Any, key: str) -> Any:
    """Rewrite plain JSON encoded with tags keyed by ``key`` (a key no user dict holds) into the
    stored form: those tags are keyed by the tag key, and user dicts holding the tag key are
    wrapped in the escape tag."""
    if isinstance(value, list):
        return [_escape(v, key) for v in value]
    if isinstance(value, dict):
        if key in value:
            return {_TAG: value[key], "value": _escape(value["value"], key)}
        inner = {k: _escape(v, key) for k, v in value.items()}
        return {_TAG: _ESCAPE, "value": inner} if _TAG in value else inner
    return value


def _decode_bytes(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


# The kinds whose value is a string, and how each is parsed.
_PARSERS: dict[str, Callable[[str], Any]] = {
    "datetime": dt.datetime.fromisoformat,
    "date": dt.date.fromisoformat,
    "time": dt.time.fromisoformat,
    "decimal": Decimal,
    "bytes": _decode_bytes,
    "uuid": uuid.UUID,
}


def _hashable(value: Any) -> Any:
    """A set member back from JSON: a list there can only have been a tuple."""
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    return value


def _members(kind: str, value: Any, serde: OrjsonSerde) -> list[Any]:
    if not isinstance(value, list):
        raise _Malformed(f"a {kind!r} tag must hold a list, not {_short(value)}")
    return [_hashable(_untag(v, serde)) for v in value]


def _decode_set(value: Any, serde: OrjsonSerde) -> set[Any]:
    return set(_members("set", value, serde))


def _decode_frozenset(value: Any, serde: OrjsonSerde) -> frozenset[Any]:
    return frozenset(_members("frozenset", value, serde))


def _decode_dict(value: Any, serde: OrjsonSerde) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _Malformed(f"a {_ESCAPE!r} tag must hold an object, not {_short(value)}")
    return {k: _untag(v, serde) for k, v in value.items()}


def _decode_model(value: Any, serde: OrjsonSerde) -> Any:
    if not isinstance(value, dict) or value.keys() != {"cls", "data"}:
        raise _Malformed(
            f"a 'pydantic' tag must hold {{'cls': ..., 'data': ...}}, not {_short(value)}"
        )
    name = value["cls"]
    if not isinstance(name, str):
        raise _Malformed(f"a 'pydantic' tag must name its class as a string, not {_short(name)}")
    cls = serde._readable_class(name)
    data = _untag(value["data"], serde)
    if cls is None:  # a serde for display: the model's data, no code of the class runs
        return data
    try:
        return cls.model_validate(data)
    except Exception as exc:  # pydantic's ValidationError, or whatever the model's own code raised
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise _Unloadable(f"its stored data is not a valid {name!r} ({_cut(first)})") from exc


# The other kinds, and how each is decoded.
_DECODERS: dict[str, Callable[[Any, OrjsonSerde], Any]] = {
    "set": _decode_set,
    "frozenset": _decode_frozenset,
    "pydantic": _decode_model,
    _ESCAPE: _decode_dict,
}
# What the decoders raise on a value of the right JSON type that is still invalid.
_DECODING_ERRORS = (ValueError, TypeError, InvalidOperation, binascii.Error)


def _untag(value: Any, serde: OrjsonSerde) -> Any:
    """A stored value with its tags decoded; raises _Malformed for a dict holding the tag key
    that is not a well-formed tag. (Scalars are not passed down: a call per string or number
    would double the cost of decoding a large state.)"""
    if isinstance(value, list):
        return [_untag(v, serde) if type(v) in _NESTED else v for v in value]
    if isinstance(value, dict):
        if _TAG not in value:
            return {k: _untag(v, serde) if type(v) in _NESTED else v for k, v in value.items()}
        kind = value[_TAG]
        if len(value) != 2 or "value" not in value:
            raise _Malformed(
                f"a dict holding the {_TAG!r} key must be a tag of exactly the keys "
                f"{_TAG!r} and 'value', not one of keys {_short(sorted(value))}"
            )
        inner = value["value"]
        try:
            parse = _PARSERS.get(kind) if isinstance(kind, str) else None
            if parse is not None:
                if not isinstance(inner, str):
                    raise _Malformed(f"a {kind!r} tag must hold a string, not {_short(inner)}")
                return parse(inner)
            decoder = _DECODERS.get(kind) if isinstance(kind, str) else None
            if decoder is None:
                raise _Malformed(f"{_short(kind)} is not a kind of tag this serde writes")
            return decoder(inner, serde)
        except _DECODING_ERRORS as exc:
            raise _Malformed(f"a {kind!r} tag holds an invalid value ({_cut(str(exc))})") from exc
    return value


class OrjsonSerde:
    """The default serde (see the module docstring for what round-trips).

    ``models`` are the pydantic model classes the application stores in state; only those are
    written, and only those are rebuilt when a stored step is loaded, matched by the stored
    ``module:QualifiedName``. ``allowed_modules`` opts in to more: a model class defined in one
    of these modules (or their submodules) is written too, and loading imports a stored class
    name only if its module is under one of them. A stored class name is never imported
    otherwise. ``models_as_data=True`` is for tools that only display state (the CLI): a model
    of any other class loads as the dict of its stored data, and no code of it runs. Either list
    is a :class:`~burr_async.errors.ConfigurationError` when it is not what it
    should be (a class that is not a pydantic model, two classes under one name, a module prefix
    that is not a dotted name).
    """

    __slots__ = ("_by_class", "_by_name", "_models_as_data", "_modules")

    def __init__(
        self,
        *,
        models: Iterable[type[Any]] = (),
        allowed_modules: Iterable[str] = (),
        models_as_data: bool = False,
    ) -> None:
        if isinstance(models, type) or isinstance(allowed_modules, str):
            raise ConfigurationError(
                "Pass models=[...] and allowed_modules=(...) as collections, for example "
                "OrjsonSerde(models=[MyModel], allowed_modules=('myapp.models',))."
            )
        self._by_name: dict[str, type[Any]] = {}
        self._by_class: dict[type[Any], str] = {}
        for cls in models:
            if not _is_model_class(cls):
                raise ConfigurationError(
                    f"OrjsonSerde(models=[...]) takes pydantic model classes, not {cls!r}."
                )
            name = _class_name(cls)
            if self._by_name.setdefault(name, cls) is not cls:
                raise ConfigurationError(
                    f"Two registered model classes are both named {name!r}; a stored model "
                    "could not tell them apart. Give them distinct names."
                )
            self._by_class[cls] = name
        self._models_as_data = models_as_data
        self._modules = tuple(allowed_modules)
        for module in self._modules:
            if not isinstance(module, str) or not _DOTTED.fullmatch(module):
                raise ConfigurationError(
                    f"OrjsonSerde(allowed_modules=...) takes dotted module names such as "
                    f"'myapp.models', not {module!r}."
                )

    def dumps(self, values: Mapping[str, Any]) -> bytes:
        """The state's values as a JSON object; SerializationError naming the key for a value
        that would not load back equal."""
        try:
            return self._encode(values)
        except (TypeError, orjson.JSONEncodeError) as exc:
            raise self._explain(values, exc) from exc

    def loads(self, data: bytes | str) -> dict[str, Any]:
        """The values ``dumps`` wrote; SerializationError (naming the key, when the problem is
        inside a value) for a row it cannot have written."""
        try:
            decoded = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise SerializationError(f"Stored state is not valid JSON: {exc}") from exc
        if not isinstance(decoded, dict):
            raise SerializationError(
                f"Stored state must be a JSON object, found {type(decoded).__name__}."
            )
        tagged = _TAG_BYTES in data if isinstance(data, bytes) else _TAG in data
        if not tagged:
            return decoded
        return self.decode(decoded)

    def decode(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """A new dict of ``values`` with the serde's tags decoded: what :meth:`loads` returns for
        the JSON object ``values`` was parsed from. Values that are not JSON dicts or lists are
        passed through as they are. SerializationError for a malformed tag, as in ``loads``."""
        result: dict[str, Any] = {}
        for key, value in values.items():  # the state's own keys are never tags
            try:
                result[key] = _untag(value, self)
            except _Malformed as exc:
                damaged = (
                    ""
                    if isinstance(exc, _Unloadable)
                    else " This serde does not write that: the stored row is damaged or was "
                    "written by other code."
                )
                raise SerializationError(
                    f"Stored state key {key!r} cannot be loaded: {exc}.{damaged}", key=key
                ) from exc
            except RecursionError as exc:
                raise SerializationError(
                    f"Stored state key {key!r} cannot be loaded: it is nested too deeply.",
                    key=key,
                ) from exc
        return result

    def _encode(self, values: Mapping[str, Any]) -> bytes:
        """``dumps`` without the explanation of errors.

        The fast path is one orjson call. Its output holds the tag key once per tag the encoder
        made, plus once per dict key equal to the tag key (and rarely a false positive, such as
        the key ``'"__burr_async__'``); a state that has none costs one extra scan of the bytes.
        Otherwise the state is encoded again the slow way, which escapes those dicts.
        """
        data = values._data if isinstance(values, State) else values
        encoder = _Encoder(self, _TAG)
        encoded = orjson.dumps(encoder.top_level(data), default=encoder.encode, option=_OPTIONS)
        if _TAG_KEY_BYTES in encoded:
            expected = encoder.tags + (_TAG in data)  # a state key itself is never read as a tag
            if encoded.count(_TAG_KEY_BYTES) != expected:
                return self._encode_escaped(data)
        return encoded

    def _encode_escaped(self, data: Mapping[str, Any]) -> bytes:
        """Encode a state in which some dict holds the tag key: tags are first keyed by a random
        key no user dict holds, so that in the plain JSON decoded back they can be told from
        user dicts; then ``_escape`` rewrites that JSON into the stored form."""
        key = f"{_TAG}{secrets.token_hex(16)}"
        encoder = _Encoder(self, key)
        plain = orjson.loads(
            orjson.dumps(encoder.top_level(data), default=encoder.encode, option=_OPTIONS)
        )
        return orjson.dumps({k: _escape(v, key) for k, v in plain.items()})

    def _writable_name(self, cls: type[Any]) -> str:
        """The stored name of a model class ``dumps`` may write; _Refused for any other (it could
        not be loaded back)."""
        name = self._by_class.get(cls)
        if name is not None:
            return name
        name = _class_name(cls)
        module = cls.__module__
        if self._allows(module):
            try:
                found = self._import(name)
            except _Malformed as exc:
                raise _Refused(
                    f"the pydantic model class {name!r} cannot be found under that name, so it "
                    f"could not be loaded back ({exc}); register it with OrjsonSerde(models=[...])"
                ) from exc
            if found is cls:
                self._by_class[cls] = name
                self._by_name.setdefault(name, cls)
                return name
        raise _Refused(
            f"the pydantic model class {name!r} is not registered with this serde, so it could "
            f"not be loaded back; register it: OrjsonSerde(models=[{cls.__qualname__}, ...])"
        )

    def _readable_class(self, name: str) -> type[Any] | None:
        """The model class a stored tag names: a registered one, or one imported from an
        allowed module; None for any other when models load as data, else _Unloadable (nothing
        else is imported)."""
        cls = self._by_name.get(name)
        if cls is not None:
            return cls
        module = name.partition(":")[0]
        if not self._allows(module):
            if self._models_as_data:
                return None
            raise _Unloadable(
                f"it holds a pydantic model of class {name!r}, which is not registered with "
                "this serde. Register the class: OrjsonSerde(models=[...]) (stored class names "
                "are never imported otherwise)"
            )
        return self._import(name)

    def _allows(self, module: str) -> bool:
        """Whether ``module`` is one of the allowed modules or inside one."""
        return any(module == m or module.startswith(m + ".") for m in self._modules)

    def _import(self, name: str) -> type[Any]:
        """The model class ``module:QualifiedName`` names, imported from an allowed module."""
        module_name, _, qualname = name.partition(":")
        parts = qualname.split(".")
        if not _DOTTED.fullmatch(module_name) or not all(
            p.isidentifier() and not p.startswith("__") for p in parts
        ):
            raise _Malformed(f"{name!r} is not the name of a class")
        try:
            target: Any = importlib.import_module(module_name)
            for part in parts:
                target = getattr(target, part)
        except Exception as exc:  # ImportError, AttributeError, or the module's own failure
            raise _Unloadable(
                f"the pydantic model class {name!r} cannot be imported here ({exc}). Keep the "
                "class importable under that name (or alias it there), or register it with "
                "OrjsonSerde(models=[...])"
            ) from exc
        if not _is_model_class(target):
            raise _Malformed(f"{name!r} is not a pydantic model class")
        return target  # type: ignore[no-any-return]

    def _explain(self, values: Mapping[Any, Any], exc: Exception) -> SerializationError:
        """The error for a state ``_encode`` refused: it names the first key that fails alone."""
        for key, value in values.items():
            if not isinstance(key, str):
                return SerializationError(
                    f"State key {key!r} is a {type(key).__name__}; state keys must be strings.",
                    key=str(key),
                )
            try:
                self._encode({key: value})
            except (TypeError, orjson.JSONEncodeError) as inner:
                reason = inner.__cause__ if isinstance(inner.__cause__, _Refused) else inner
                return SerializationError(
                    f"State key {key!r} holds a value that cannot be serialized "
                    f"({type(value).__name__}: {reason}). Store JSON-compatible data (or a "
                    "registered pydantic model, datetime, Decimal, bytes, set), or pass a custom "
                    "serde to the persister. Nothing was written.",
                    key=key,
                )
        return SerializationError(f"State could not be serialized: {exc}. Nothing was written.")
