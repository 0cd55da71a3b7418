"""The immutable :class:`State` that actions read and write."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, overload

from burr_async.errors import StateOperationError

if TYPE_CHECKING:
    from burr_async.serde import OrjsonSerde

__all__ = ["State"]

_MISSING: Any = object()
_GROWN = 3  # extended lists a key's record keeps: enough for a few appends in one step


class State(Mapping[str, Any]):
    """An immutable mapping of state keys to values.

    Every operation returns a new ``State``; none mutates this one or a value another ``State``
    shares (``append`` and ``extend`` build new lists). Values themselves are not copied, so treat
    them as read-only: replace a value rather than mutating it in place.

    An operation that does not fit the value it meets (``append`` to a number, ``increment`` of
    a string) raises :class:`~burr_async.errors.StateOperationError`, which is both a
    ``ValueError`` (as in Burr) and a ``TypeError``.
    """

    __slots__ = ("__weakref__", "_data", "_grown", "_typing")

    _data: dict[str, Any]
    _grown: dict[str, tuple[tuple[Any, int], ...]] | None
    """For each key whose list ``append``/``extend`` made: the lists it extended (the latest
    first, a few at most) and how many items were added to each. What a persister storing
    deltas reads to tell an appended list from a new one without comparing their items."""

    _typing: Any
    """The typing system (``with_typing_system``) that ``data`` builds a typed view with."""

    def __init__(
        self, initial_values: Mapping[str, Any] | None = None, typing_system: Any = None
    ) -> None:
        self._data = dict(initial_values) if initial_values else {}
        self._grown = None
        self._typing = typing_system

    @classmethod
    def _wrap(
        cls, data: dict[str, Any], grown: dict[str, tuple[tuple[Any, int], ...]] | None = None
    ) -> State:
        """A State over ``data`` without copying it; ``data`` must not be used afterwards."""
        new = cls.__new__(cls)
        new._data = data
        new._grown = grown
        new._typing = None
        return new

    def _derive(
        self, data: dict[str, Any], grown: dict[str, tuple[tuple[Any, int], ...]] | None = None
    ) -> State:
        """A State over ``data`` (as :meth:`_wrap`) with this state's typing system."""
        new = State._wrap(data, grown)
        new._typing = self._typing
        return new

    # -- typing ------------------------------------------------------------------------------
    def with_typing_system(self, typing_system: Any) -> State:
        """This state with ``typing_system`` (for example
        :class:`~burr_async.integrations.pydantic.PydanticTypingSystem`), which the states
        made from it keep: what ``ApplicationBuilder.with_typing`` sets on the app's state."""
        new = State._wrap(self._data, self._grown)
        new._typing = typing_system
        return new

    @property
    def typing_system(self) -> Any:
        """The state's typing system, or None."""
        return self._typing

    @property
    def data(self) -> Any:
        """The state as its typing system's type (a pydantic model with
        ``PydanticTypingSystem``); ConfigurationError when it has none."""
        if self._typing is None:
            from burr_async.errors import ConfigurationError

            raise ConfigurationError(
                "state.data needs a typing system: build the application with "
                "ApplicationBuilder().with_typing(PydanticTypingSystem(YourModel)), or call "
                "state.with_typing_system(...)."
            )
        return self._typing.construct_data(self)

    def _grown_except(self, keys: Iterable[str]) -> dict[str, tuple[tuple[Any, int], ...]] | None:
        """What this state records of grown lists, without ``keys`` (their values change)."""
        if not self._grown:
            return None
        changed = set(keys)
        kept = {k: v for k, v in self._grown.items() if k not in changed}
        return kept or None

    # -- reading ---------------------------------------------------------------------------
    def __getitem__(self, key: str) -> Any:
        try:
            return self._data[key]
        except KeyError:
            raise KeyError(
                f"State has no key {key!r}; it has {sorted(self._data)}. Use state.get(key) for an "
                "optional key."
            ) from None

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, State):
            return self._data == other._data
        if isinstance(other, Mapping):
            return self._data == dict(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"State({self._data!r})"

    def get_all(self) -> dict[str, Any]:
        """A new dict with every key and value (a shallow copy)."""
        return dict(self._data)

    def serialize(self, *, serde: OrjsonSerde | None = None) -> dict[str, Any]:
        """The state as a JSON-able dict (only dicts, lists, strings, numbers, booleans and None),
        encoded as ``serde`` (default ``OrjsonSerde()``) stores it: a value JSON cannot hold is
        a tagged dict. What a Burr persister calls (``json.dumps(state.serialize())``);
        :meth:`deserialize` is the inverse. SerializationError, naming the key, for a value the
        serde does not write."""
        import orjson

        from burr_async.serde import OrjsonSerde

        encoded: dict[str, Any] = orjson.loads((serde or OrjsonSerde()).dumps(self))
        return encoded

    @classmethod
    def deserialize(cls, data: Mapping[str, Any], *, serde: OrjsonSerde | None = None) -> State:
        """The state :meth:`serialize` produced ``data`` from: the serde's tags in it are decoded,
        other values are kept as they are. SerializationError, naming the key, for a malformed
        tag."""
        from burr_async.serde import OrjsonSerde

        return cls._wrap((serde or OrjsonSerde()).decode(data))

    @overload
    def get(self, key: str, /) -> Any: ...
    @overload
    def get(self, key: str, /, default: Any) -> Any: ...
    def get(self, key: str, /, default: Any = None) -> Any:
        """The value of ``key``, or ``default`` when it is absent."""
        return self._data.get(key, default)

    # -- writing: each returns a new State ---------------------------------------------------
    def update(self, **updates: Any) -> State:
        """Set each key to its value."""
        return self._derive({**self._data, **updates}, self._grown_except(updates))

    def append(self, **updates: Any) -> State:
        """Append one value to the list at each key (a missing key starts an empty list)."""
        return self._extended({key: (value,) for key, value in updates.items()})

    def extend(self, **updates: Iterable[Any]) -> State:
        """Append every value of an iterable to the list at each key."""
        return self._extended({key: tuple(values) for key, values in updates.items()})

    def _extended(self, updates: dict[str, tuple[Any, ...]]) -> State:
        data = dict(self._data)
        grown = dict(self._grown) if self._grown else {}
        for key, values in updates.items():
            before = self._sequence(key)
            data[key] = [*before, *values]
            if key not in self._data:
                grown.pop(key, None)
                continue
            earlier = grown.get(key, ())
            added = len(values)
            grown[key] = (
                (before, added),
                *((extended, count + added) for extended, count in earlier[: _GROWN - 1]),
            )
        return self._derive(data, grown or None)

    def increment(self, **deltas: int | float) -> State:
        """Add ``delta`` to the number at each key (a missing key counts as 0)."""
        data = dict(self._data)
        for key, delta in deltas.items():
            current = data.get(key, 0)
            if not isinstance(current, int | float) or isinstance(current, bool):
                raise StateOperationError(
                    f"Cannot increment state key {key!r}: it holds {type(current).__name__}, "
                    "not a number.",
                    key=key,
                )
            data[key] = current + delta
        return self._derive(data, self._grown_except(deltas))

    def wipe(self, delete: Iterable[str] | None = None, keep: Iterable[str] | None = None) -> State:
        """Remove the keys in ``delete``, or every key not in ``keep`` (exactly one of the two)."""
        if (delete is None) == (keep is None):
            raise StateOperationError("State.wipe takes exactly one of delete=[...] or keep=[...].")
        if delete is not None:
            drop = set(delete)
            return self._derive(
                {k: v for k, v in self._data.items() if k not in drop}, self._grown_except(drop)
            )
        kept = set(keep or ())
        return self._derive(
            {k: v for k, v in self._data.items() if k in kept},
            self._grown_except(k for k in self._data if k not in kept),
        )

    def merge(self, other: Mapping[str, Any]) -> State:
        """This state's keys overlaid with ``other``'s (``other`` wins on conflicts)."""
        return self._derive({**self._data, **other}, self._grown_except(other))

    def subset(self, *keys: str, ignore_missing: bool = True) -> State:
        """A state with only ``keys``; absent keys are skipped unless ``ignore_missing=False``."""
        if not ignore_missing:
            missing = [k for k in keys if k not in self._data]
            if missing:
                raise KeyError(f"State.subset: keys {missing} are not in the state.")
        return self._derive({k: self._data[k] for k in keys if k in self._data})

    def _sequence(self, key: str) -> list[Any] | tuple[Any, ...]:
        current = self._data.get(key, _MISSING)
        if current is _MISSING:
            return []
        if not isinstance(current, list | tuple):
            raise StateOperationError(
                f"Cannot append to state key {key!r}: it holds {type(current).__name__}, "
                "not a list.",
                key=key,
            )
        return current
