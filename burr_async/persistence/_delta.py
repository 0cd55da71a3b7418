"""Delta rows: a step stored as what it changed since the step before it.

A delta row (column ``delta`` true) holds in ``state`` the JSON array
``["delta", {"set": {...}, "trim": {...}, "append": {...}, "drop": [...]}]``, whose sections
(each left out when empty) say what the step did to the state of the step before it:

- ``set``: the keys it added or replaced, with their values as the serde encodes them;
- ``trim``: the list keys it shortened at the front, with how many items it removed there (a
  window of the last messages: the oldest leave at the front, the new ones are appended);
- ``append``: the list keys it extended, with the items it added at the end;
- ``drop``: the keys it removed.

A key is in one section at most, except that a list may be in both ``trim`` and ``append``
(removing at the front and adding at the end commute). ``trim`` is written only to a table at
revision 0005 or later (``models.TRIM_REVISION``), which no earlier release reads. Every other
row holds the full state, as before. A state is
rebuilt from the nearest full row at or before it and the deltas after that one, in order; on
the JSON as stored (tags still encoded), so no code of the application runs to rebuild it, and
the serde decodes the result exactly as it would a full row.

A delta is a JSON *array*: every earlier release of burr_async refuses a stored state that is
not a JSON object, so none can mistake a delta for a state (``docs/deployment.md``).

The writer side (:class:`DeltaEncoder`) remembers, per app, the last state it stored or loaded
(by weak reference: it keeps nothing alive), and writes a full state instead of a delta when it
has no such state, every ``snapshot_every`` steps, or when the deltas since the last full state
outweigh it: a load then reads at most ``snapshot_every`` rows of at most about twice the
state's size.
"""

from __future__ import annotations

import logging
import operator
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import islice, repeat
from typing import Any

import orjson
import sqlalchemy as sa

from burr_async.errors import SerializationError, describe_step
from burr_async.persistence._dialect import STORED_COLUMNS
from burr_async.serde import OrjsonSerde, Serde
from burr_async.state import State

__all__: list[str] = []

MARKER = "delta"
"""The first item of a delta row's JSON array (format 1)."""
DEFAULT_SNAPSHOT_EVERY = 50
"""Steps between full states, at most, by default."""
_CHAINS_LIMIT = 10_000  # apps remembered by one encoder; a forgotten one writes a full state next
_MISSING: Any = object()
_NEAR = 8  # a list shortened at the front by fewer items than this is found without a scan
_log = logging.getLogger("burr_async.persistence")
_SECTIONS = ("set", "trim", "append", "drop")
_TAG = "__burr_async__"  # in a stored text, a sign that the serde must decode its tags


@dataclass(frozen=True, slots=True)
class Chain:
    """What an encoder remembers of an app's latest stored step: its sequence id and state,
    and the rows since the last full one (their count and bytes, and that one's bytes)."""

    sequence_id: int
    state: weakref.ref[State]
    deltas: int
    delta_bytes: int
    snapshot_bytes: int


@dataclass(frozen=True, slots=True)
class Encoded:
    """A step's ``state`` column as JSON bytes, whether it is a delta, and the chain to
    remember once the row is committed."""

    text: bytes
    delta: bool
    chain: Chain


class DeltaEncoder:
    """Chooses, per step, between a delta and a full state, and encodes it with ``serde``."""

    def __init__(self, serde: OrjsonSerde, snapshot_every: int) -> None:
        self._serde = serde
        self._every = snapshot_every
        self._chains: dict[tuple[str, str], Chain] = {}

    def encode(
        self,
        partition_key: str,
        app_id: str,
        sequence_id: int,
        state: State,
        *,
        trims: bool = True,
    ) -> Encoded:
        """The row of ``state`` at ``sequence_id``: a delta over the app's remembered state
        when that is the state at ``sequence_id - 1`` and no full state is due, else the full
        state. With ``trims`` false the delta has no ``trim`` section (a table before revision
        0005): a list shortened at the front is stored whole. SerializationError, naming the
        key, for a value the serde does not write."""
        chain = self._chains.get((partition_key, app_id))
        base = None
        if (
            chain is not None
            and chain.sequence_id == sequence_id - 1
            and chain.deltas + 1 < (self._every)
        ):
            base = chain.state()
        if chain is not None and base is not None:
            text = self._delta(base, state, trims)
            if chain.delta_bytes + len(text) <= chain.snapshot_bytes:
                return Encoded(
                    text,
                    True,
                    Chain(
                        sequence_id,
                        weakref.ref(state),
                        chain.deltas + 1,
                        chain.delta_bytes + len(text),
                        chain.snapshot_bytes,
                    ),
                )
        full = self._serde.dumps(state)
        return Encoded(full, False, Chain(sequence_id, weakref.ref(state), 0, 0, len(full)))

    def _delta(self, base: State, state: State, trims: bool) -> bytes:
        old, new = base._data, state._data
        sets: dict[str, Any] = {}
        trimmed: dict[str, int] = {}
        appends: dict[str, Any] = {}
        for key, value in new.items():
            before = old.get(key, _MISSING)
            if before is value:
                continue
            change = _list_change(state, key, before, value, trims)
            if change is None:
                sets[key] = value
                continue
            removed, added = change
            if removed:
                trimmed[key] = removed
            if added:
                appends[key] = value[-added:]
        parts = []
        if sets:
            parts.append(b'"set":' + self._serde.dumps(sets))
        if trimmed:
            parts.append(b'"trim":' + orjson.dumps(trimmed))
        if appends:
            parts.append(b'"append":' + self._serde.dumps(appends))
        drops = [key for key in old if key not in new]
        if drops:
            parts.append(b'"drop":' + orjson.dumps(drops))
        return b'["delta",{' + b",".join(parts) + b"}]"

    def remember(self, partition_key: str, app_id: str, chain: Chain) -> None:
        """Record a committed row (or a loaded step) as the app's latest."""
        key = (partition_key, app_id)
        self._chains.pop(key, None)
        self._chains[key] = chain
        while len(self._chains) > _CHAINS_LIMIT:
            del self._chains[next(iter(self._chains))]

    def forget(self, partition_key: str | None = None, app_id: str | None = None) -> None:
        """Forget one app, every app of a partition (``app_id`` None), or every app (both
        None): after a deletion, their next step writes a full state."""
        if partition_key is None:
            self._chains.clear()
        elif app_id is not None:
            self._chains.pop((partition_key, app_id), None)
        else:
            for key in [k for k in self._chains if k[0] == partition_key]:
                del self._chains[key]


def _list_change(
    state: State, key: str, before: Any, value: Any, trims: bool
) -> tuple[int, int] | None:
    """``(removed, added)`` when the list ``value`` is the list ``before`` with ``removed``
    items taken off its front (only when ``trims``) and ``added`` put at its end, else None
    (``value`` is stored whole). The kept items must be the very same objects, as for
    :func:`_appended`; a kept run is looked for from the first occurrence in ``before`` of
    ``value``'s first item, so a list whose items repeat one object may be stored whole."""
    if type(value) is not list or type(before) not in (list, tuple):
        return None
    added = _appended(state, key, before, value)
    if added is not None:
        return 0, added
    if not trims or not value:
        return None
    first = value[0]
    # by identity (``index`` would compare with ``==``): a window drops a few items a step
    removed = next((k for k in range(1, min(len(before), _NEAR)) if before[k] is first), 0)
    if not removed:
        try:  # further in, at C speed
            removed = list(map(operator.is_, before, repeat(first))).index(True, _NEAR)
        except ValueError:
            return None
    kept = len(before) - removed
    if len(value) < kept or not all(map(operator.is_, islice(before, removed, None), value)):
        return None
    return removed, len(value) - kept


def _appended(state: State, key: str, before: Any, value: Any) -> int | None:
    """How many items were appended to the list ``before`` to make the list ``value`` (0: it
    is the same list's items), or None when ``value`` is not ``before`` extended. The State
    operations that extend a list record what they extended (``State._grown``); otherwise the
    items are compared by identity (an item that was replaced by an equal one is not the same:
    ``1`` and ``True`` are equal, and are stored differently). Both are lists (``before``
    may be a tuple): :func:`_list_change` checks."""
    grown = state._grown.get(key) if state._grown else None
    if grown is not None:
        for extended, count in grown:
            if extended is before:
                return count
    if len(value) < len(before) or not all(map(operator.is_, before, value)):
        return None
    return len(value) - len(before)


# -- reading -----------------------------------------------------------------------------------
TEXT = STORED_COLUMNS.index("state")
"""Where a stored row (:data:`STORED_COLUMNS` order) holds its state text."""
_DELTA = STORED_COLUMNS.index("delta")


def chain_of(rows: Sequence[Sequence[Any]]) -> tuple[list[tuple[int, bool, str]], bool]:
    """``(sequence_id, delta, state text)`` of stored rows (:data:`STORED_COLUMNS` order), and
    whether any of them is a delta."""
    chain = [(row[0], bool(row[_DELTA]), row[TEXT]) for row in rows]
    return chain, any(delta for _seq, delta, _text in chain)


class DamagedHistoryError(Exception):
    """A stored row cannot be rebuilt into a state (the caller adds the app and step)."""


def rebuild(rows: Iterable[tuple[int, bool, str]]) -> Iterator[tuple[int, dict[str, Any], bool]]:
    """The full state, as stored JSON (tags still encoded), after each row of ``rows``:
    ``(sequence_id, delta, state text)`` of one app, oldest first, starting at a full row, in
    sequence. Yields ``(sequence_id, state, tagged)``: ``tagged`` when some row it was built
    from may hold a serde tag. Each yielded dict is new; lists are shared with the dict before
    unless the step changed them. DamagedHistoryError for rows that cannot make a state."""
    return _states(rows, copy=True)


def rebuild_last(rows: Sequence[tuple[int, bool, str]]) -> tuple[dict[str, Any], bool]:
    """The full state after the last of ``rows`` (as :func:`rebuild`) and whether it may hold
    a tag: extends lists in place, for one load."""
    last = deque(_states(rows, copy=False), maxlen=1)
    if not last:
        raise DamagedHistoryError("no row to rebuild a state from")
    _sequence_id, state, tagged = last[0]
    return state, tagged


def _states(
    rows: Iterable[tuple[int, bool, str]], *, copy: bool
) -> Iterator[tuple[int, dict[str, Any], bool]]:
    """:func:`rebuild`'s states; with ``copy`` False each is the one before it, changed in
    place (for a caller that keeps only the last)."""
    state: dict[str, Any] | None = None
    tagged = False
    previous = -1
    for sequence_id, delta, text in rows:
        tagged = tagged or _TAG in text
        if not delta:
            state = _full(text)
        elif state is None:
            raise DamagedHistoryError(
                f"step {sequence_id} is stored as a delta, but no full state is stored before "
                "it: the history was cut outside burr_async"
            )
        elif sequence_id != previous + 1:
            raise DamagedHistoryError(
                f"step {sequence_id} is stored as a delta, but the step before it "
                f"({sequence_id - 1}) is not stored: the steps between {previous} and "
                f"{sequence_id} are missing, cut outside burr_async"
            )
        else:
            state = _apply(dict(state) if copy else state, text, copy_lists=copy)
        previous = sequence_id
        yield sequence_id, state, tagged


def _full(text: str) -> dict[str, Any]:
    try:
        state = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise DamagedHistoryError(f"its stored state is not valid JSON ({exc})") from exc
    if not isinstance(state, dict):
        raise DamagedHistoryError(
            f"its stored state must be a JSON object, found {type(state).__name__}"
        )
    return state


def _apply(state: dict[str, Any], text: str, *, copy_lists: bool) -> dict[str, Any]:
    """``state`` (modified) after the delta ``text``; extended lists are new ones when
    ``copy_lists``, else extended in place."""
    try:
        delta = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise DamagedHistoryError(f"its stored delta is not valid JSON ({exc})") from exc
    if (
        type(delta) is not list
        or len(delta) != 2
        or delta[0] != MARKER
        or type(delta[1]) is not dict
    ):
        raise DamagedHistoryError(
            'its stored delta is not of the form ["delta", {"set": ..., "trim": ..., '
            '"append": ..., "drop": [...]}]'
        )
    for section, values in delta[1].items():
        if section == "append" and type(values) is dict:
            for key, items in values.items():
                current = state.get(key)
                if type(current) is not list or type(items) is not list:
                    raise DamagedHistoryError(
                        f"its delta appends to {key!r}, which is not a list in the state before"
                    )
                if copy_lists:
                    state[key] = current + items
                else:
                    current.extend(items)
        elif section == "trim" and type(values) is dict:
            for key, count in values.items():
                current = state.get(key)
                if type(current) is not list or type(count) is not int or count < 1:
                    raise DamagedHistoryError(
                        f"its delta trims {key!r}, which is not a list in the state before, or "
                        f"by {count!r}, which is not a count of items"
                    )
                if count > len(current):
                    raise DamagedHistoryError(
                        f"its delta trims {count} items off {key!r}, which has {len(current)}"
                    )
                if copy_lists:
                    state[key] = current[count:]
                else:
                    del current[:count]
        elif section == "set" and type(values) is dict:
            state.update(values)
        elif section == "drop" and type(values) is list:
            for key in values:
                if type(key) is not str or state.pop(key, _MISSING) is _MISSING:
                    raise DamagedHistoryError(
                        f"its delta drops {key!r}, which the state before lacks"
                    )
        else:
            raise DamagedHistoryError(
                f"its stored delta has a section {section!r} that is not one of {_SECTIONS} "
                "of the right JSON type"
            )
    return state


def decode(serde: Serde, state: dict[str, Any], tagged: bool) -> dict[str, Any]:
    """The state's values from rebuilt JSON: decoded as ``serde.loads`` decodes a full row."""
    if isinstance(serde, OrjsonSerde):
        return serde.decode(state) if tagged else state
    return serde.loads(orjson.dumps(state))


def damaged(
    exc: DamagedHistoryError, app_id: str, partition_key: str | None, sequence_id: int | None
) -> SerializationError:
    """The error a load raises for history it cannot rebuild."""
    step = describe_step(app_id, partition_key, sequence_id)
    return SerializationError(
        f"Cannot rebuild the state of {step}: {exc}. The stored rows were changed or removed "
        "by something other than burr_async; restore them from a backup, or delete the app."
    )


def seed(rows: Sequence[tuple[int, bool, str]]) -> tuple[int, int, int]:
    """``(deltas, delta_bytes, snapshot_bytes)`` of loaded chain ``rows`` (from a full row),
    for :meth:`DeltaEncoder.remember`."""
    deltas = len(rows) - 1
    delta_bytes = sum(len(text) for _seq, _delta, text in rows[1:])
    return deltas, delta_bytes, len(rows[0][2])


def sections(text: bytes) -> Mapping[str, Any] | None:
    """The ``set`` and ``append`` sections of an encoded delta merged into one mapping (for the
    NUL check of values), or None when ``text`` is a full state."""
    parsed = orjson.loads(text)
    if not isinstance(parsed, list):
        return None
    ops: dict[str, Any] = parsed[1]
    return {**ops.get("set", {}), **ops.get("append", {})}


def has_trim(text: str) -> bool:
    """Whether the delta row text ``text`` has a ``trim`` section (revision 0005 on)."""
    parsed = orjson.loads(text)
    return type(parsed) is list and len(parsed) == 2 and "trim" in parsed[1]


def materialize_table(
    connection: sa.Connection, table: sa.Table, only: Callable[[str], bool] | None = None
) -> int:
    """Rewrite every delta row of ``table`` (or every one whose text ``only`` accepts) as the
    full state it stands for, app by app (inside the caller's transaction: a migration's); the
    number of rows rewritten. A full row may follow any row, so the deltas after a rewritten
    one still apply. The rows of an app after a gap in its history (rows removed outside
    burr_async) cannot be rebuilt: they are left as they are, with a warning on the
    ``burr_async.persistence`` logger."""
    t = table
    apps = connection.execute(
        sa.select(t.c.partition_key, t.c.app_uid).where(t.c.delta == sa.true()).distinct()
    ).all()
    rewritten = 0
    for partition_key, app_id in apps:
        rows = connection.execute(
            sa.select(t.c.sequence_id, t.c.delta, sa.cast(t.c.state, sa.Text))
            .where(t.c.partition_key == partition_key, t.c.app_uid == app_id)
            .order_by(t.c.sequence_id)
        ).all()
        chain = [(seq, bool(delta), text) for seq, delta, text in rows]
        deltas = {seq for seq, delta, text in chain if delta and (only is None or only(text))}
        if not deltas:
            continue
        try:
            for seq, state, _tagged in rebuild(chain):
                if seq in deltas:
                    connection.execute(
                        sa.update(t)
                        .where(
                            t.c.partition_key == partition_key,
                            t.c.app_uid == app_id,
                            t.c.sequence_id == seq,
                        )
                        .values(state=state, delta=False)
                    )
                    rewritten += 1
        except DamagedHistoryError as exc:
            _log.warning("%s", damaged(exc, app_id, partition_key or None, None))
    return rewritten
